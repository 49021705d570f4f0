"""The `cxr` command line: thin subcommands over the `cxr` modules.

    cxr predict PATH... [--model models/fusion/model.keras] [--passes 25] [--threshold 0.1]
                        [--seed 0] [--batch-size 32] [--top K] [--json | --csv]
                        [--heatmap DIR]

`predict` runs Monte-Carlo dropout (`cxr.evaluation.uncertainty`) on image files (PNG, JPEG,
DICOM) and folders and prints, per image, each finding's mean probability, whether that mean
reaches the model's operating threshold (``positive``; the per-finding threshold the train
stage chose on the validation split, metadata.json ``thresholds``), its standard deviation over
the passes and the referral flag (std > --threshold); for a DICOM film also its identity (SOP
Instance UID, view position, modality) and the decoder's warnings (not CR/DX, not a frontal
view, ...), which are repeated on stderr. With `--heatmap DIR` it also writes, per image, a
Grad-CAM overlay PNG (`cxr.interpret.gradcam`) for each of its top findings by mean (`--top`, default 3) as
`DIR/<stem>_<finding>.png`. Exit status: 0 all images predicted, 1 some files could not be
read (each reported on stderr), 2 nothing could be predicted (no readable image, no model,
no writable heatmap folder).

TensorFlow is imported only when a subcommand needs it, so `cxr --help` answers at once.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxr.labels import LABELS
from cxr.models.metadata import MetadataError, read_metadata

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_MODEL = "models/fusion/model.keras"
DEFAULT_HEATMAP_TOP = 3
EXIT_OK, EXIT_SOME_FAILED, EXIT_NOTHING_DONE = 0, 1, 2


@dataclass(frozen=True)
class Failure:
    """A file that could not be predicted, and why."""

    path: str
    reason: str


# --------------------------------------------------------------------------- argument parsing


def _bounded(kind, minimum, maximum=None):
    """An argparse `type` that converts with `kind` and checks minimum <= value <= maximum."""

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            allowed = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {allowed}; got {text}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxr", description="Chest X-ray multi-label classification (NIH ChestX-ray14)."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    predict = commands.add_parser(
        "predict",
        help="Monte-Carlo dropout predictions (mean, std, referral) for image files/folders",
        description="Predict the 14 findings of chest X-ray images with Monte-Carlo dropout: "
        "mean probability, standard deviation over the passes, and a referral flag where "
        "the std exceeds --threshold. Folders are searched recursively for "
        + ", ".join(IMAGE_SUFFIXES) + " files and DICOM files (found by their DICM magic, "
        "whatever their extension).",
    )
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--model", default=DEFAULT_MODEL,
                         help=f"a trained .keras model (default: {DEFAULT_MODEL})")
    predict.add_argument("--passes", type=_bounded(int, 1), default=25,
                         help="Monte-Carlo dropout passes per image (default: 25)")
    predict.add_argument("--threshold", type=_bounded(float, 0.0), default=0.1,
                         help="refer a finding when its std exceeds this (default: 0.1)")
    predict.add_argument("--seed", type=_bounded(int, 0), default=0,
                         help="seed of the dropout masks (default: 0)")
    predict.add_argument("--batch-size", type=_bounded(int, 1), default=32,
                         help="images per backbone batch (default: 32)")
    predict.add_argument("--top", type=_bounded(int, 1, len(LABELS)), default=None, metavar="K",
                         help="show only the K findings with the highest mean, per image")
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true",
                        help="print a JSON list of objects, one per image")
    output.add_argument("--csv", action="store_true",
                        help="print CSV: one row per image and finding")
    predict.add_argument("--heatmap", metavar="DIR", default=None,
                         help="also write a Grad-CAM overlay PNG per image and top finding "
                         f"(--top, default {DEFAULT_HEATMAP_TOP}) into DIR as "
                         "<stem>_<finding>.png")
    predict.set_defaults(handler=_predict)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxr` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_NOTHING_DONE
    return args.handler(args)


# --------------------------------------------------------------------------- cxr predict


def _predict(args: argparse.Namespace) -> int:
    # Quiet TensorFlow's C++ warnings (one per undecodable file otherwise); only effective
    # before TensorFlow is first imported.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    paths, failures = find_images(args.paths)
    if args.heatmap is not None:
        try:
            Path(args.heatmap).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            _report(failures)
            print(f"cxr predict: cannot create the heatmap folder {args.heatmap}: {err}",
                  file=sys.stderr)
            return EXIT_NOTHING_DONE
    model_path = Path(args.model)
    if not model_path.is_file():
        _report(failures)
        print(f"cxr predict: model file not found: {model_path} (train one with `dvc repro`, "
              "or pass --model PATH of a .keras file)", file=sys.stderr)
        return EXIT_NOTHING_DONE
    try:
        model = load_model(model_path)
        image_size = model_image_size(model)
    except Exception as err:  # a corrupt or foreign file raises anything from zipfile to keras
        _report(failures)
        print(f"cxr predict: cannot use model {model_path}: {err}", file=sys.stderr)
        return EXIT_NOTHING_DONE
    try:
        metadata = read_metadata(model_path.parent)
        labels = check_metadata(metadata, image_size, model.output_shape[-1])
    except (MetadataError, ValueError) as err:
        _report(failures)
        print(f"cxr predict: cannot use model {model_path}: {err}", file=sys.stderr)
        return EXIT_NOTHING_DONE

    names, images, decode_failures, films = decode_images(paths, image_size)
    failures += decode_failures
    _report(failures)
    for name, film in zip(names, films, strict=True):
        for warning in film.warnings if film is not None else ():
            print(f"cxr predict: warning: {name}: {warning}", file=sys.stderr)
    if not names:
        print("cxr predict: no image could be read; nothing to predict.", file=sys.stderr)
        return EXIT_NOTHING_DONE

    import numpy as np

    from cxr.evaluation.uncertainty import mc_dropout_predict

    pixels = np.stack(images)
    result = mc_dropout_predict(model, pixels, passes=args.passes, seed=args.seed,
                                batch_size=args.batch_size)
    rows = prediction_rows(names, result, args.threshold, labels, args.top,
                           operating=metadata["thresholds"], films=films)
    if args.heatmap is not None:
        written = write_heatmaps(model, names, pixels, result, args.top or DEFAULT_HEATMAP_TOP,
                                 Path(args.heatmap), args.batch_size, labels=labels,
                                 layer_name=metadata["gradcam_layer"])
        for row, image_heatmaps in zip(rows, written, strict=True):
            for finding in row["findings"]:
                if finding["finding"] in image_heatmaps:
                    finding["heatmap"] = image_heatmaps[finding["finding"]]
        count = sum(len(paths) for paths in written)
        print(f"cxr predict: wrote {count} heatmap overlays to {args.heatmap}", file=sys.stderr)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.csv:
        write_csv(rows, sys.stdout)
    else:
        print(f"model {model_path}  passes {args.passes}  seed {args.seed}  "
              f"refer when std > {args.threshold:g}  positive when mean >= the "
              f"{metadata['threshold_method']} threshold of validation\n")
        sys.stdout.write(format_table(rows))
    return EXIT_SOME_FAILED if failures else EXIT_OK


def find_images(arguments: Sequence[str]) -> tuple[list[Path], list[Failure]]:
    """Files named directly (any extension) and image files found under folders, in order.

    In folders: files with an image suffix, and DICOM files found by their magic (clinical
    exports often have no extension). A missing path, or a folder without images, is a
    Failure. Duplicates are dropped.
    """
    from cxr.data.dicom import is_dicom

    found: dict[Path, None] = {}
    failures = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file()
                            and (p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p)))
            if not images:
                failures.append(Failure(argument, "folder holds no "
                                        + "/".join(IMAGE_SUFFIXES) + " or DICOM files"))
            found.update(dict.fromkeys(images))
        elif path.exists():
            found[path] = None
        else:
            failures.append(Failure(argument, "no such file or folder"))
    return list(found), failures


def load_model(path: Path):
    """A saved cxr model (the cxr custom layers are registered by importing cxr.models)."""
    import keras

    import cxr.models.layers  # noqa: F401  (registers the custom layers for deserialization)

    return keras.models.load_model(path, compile=False)


def check_metadata(metadata: dict, image_size: int, n_outputs: int) -> list[str]:
    """The label order from metadata.json, after checking it fits the loaded model and
    holds one operating threshold in [0, 1] per label."""
    labels = list(metadata["labels"])
    thresholds = metadata["thresholds"]
    if not isinstance(thresholds, dict):
        raise ValueError("metadata.json 'thresholds' must map every label to its operating "
                         f"threshold; got {type(thresholds).__name__}")
    missing, extra = set(labels) - set(thresholds), set(thresholds) - set(labels)
    if missing or extra:
        raise ValueError("metadata.json 'thresholds' must map every label to its operating "
                         f"threshold; labels without one: {sorted(missing)}, keys that are "
                         f"not labels: {sorted(extra)}")
    bad = {label: value for label, value in thresholds.items()
           if isinstance(value, bool) or not isinstance(value, int | float)
           or not 0.0 <= float(value) <= 1.0}
    if bad:
        raise ValueError(f"metadata.json 'thresholds' must be numbers in [0, 1]; got {bad}")
    if int(metadata["image_size"]) != image_size:
        raise ValueError(f"metadata.json says image_size {metadata['image_size']}, the model "
                         f"takes {image_size} px")
    if len(labels) != n_outputs:
        raise ValueError(f"metadata.json lists {len(labels)} labels, the model has "
                         f"{n_outputs} outputs")
    return labels


def model_image_size(model) -> int:
    """The side of the square images the model takes, from its input shape."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise ValueError(
            f"expected a model taking square RGB images (None, S, S, 3); its input shape is {shape}"
        )
    return int(shape[1])


def decode_images(paths: Sequence[Path], image_size: int):
    """Decode every file on its own: `(names, uint8 images, failures, films)` for the good and
    bad; `films[i]` is the DICOM film (identity, warnings) of `names[i]`, None for PNG/JPEG.

    The same decoding and resizing as the prepare stage (`read_image` behind `read_gray`,
    `resize_gray`), so a model sees at prediction time exactly the pixels it was trained and
    evaluated on.
    """
    import numpy as np

    from cxr.data.prepare import read_image, resize_gray

    names, images, failures, films = [], [], [], []
    for path in paths:
        try:
            decoded = read_image(path)
            gray = resize_gray(decoded.pixels, image_size)
        except Exception as err:  # unreadable or unsupported: skip just this file
            reason = _decode_error(err).removeprefix(f"{path}: ")  # the report names the file
            failures.append(Failure(str(path), reason))
            continue
        names.append(str(path))
        images.append(np.repeat(gray[..., None], 3, axis=-1))
        films.append(decoded.dicom)
    return names, images, failures, films


def _decode_error(error: Exception) -> str:
    """The error's message, without TensorFlow's op-internals decoration if it has any."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.DOTALL)
    return text.strip() or type(error).__name__


def _report(failures: Sequence[Failure]) -> None:
    for failure in failures:
        print(f"cxr predict: skipped {failure.path}: {failure.reason}", file=sys.stderr)


# --------------------------------------------------------------------------- heatmaps


def write_heatmaps(model, names: Sequence[str], images, result, top: int, out_dir: Path,
                   batch_size: int = 32, labels: Sequence[str] = LABELS,
                   layer_name: str | None = None) -> list[dict[str, str]]:
    """Grad-CAM overlays of each image's `top` findings by MC mean; per image {finding: path}.

    Files are `<stem>_<finding>.png`; images that share a stem (same name in two folders)
    get `<stem>-2`, `<stem>-3`, ... in input order. The overlay shows the image as the model
    saw it (resized to its square input), titled with the finding and its MC mean and std.
    """
    import numpy as np

    from cxr.interpret.gradcam import gradcam
    from cxr.interpret.overlays import save_overlay

    order = np.argsort(-result.mean, axis=1, kind="stable")[:, :top]
    pairs = [(i, int(k)) for i in range(len(names)) for k in order[i]]
    image_index = np.array([i for i, _ in pairs])
    heatmaps = gradcam(model, images[image_index], [k for _, k in pairs],
                       layer_name=layer_name, batch_size=batch_size)
    stems = unique_stems(names)
    written: list[dict[str, str]] = [{} for _ in names]
    for (i, k), heatmap in zip(pairs, heatmaps, strict=True):
        finding = labels[k]
        path = out_dir / f"{stems[i]}_{finding}.png"
        title = (f"{Path(names[i]).name}\n{finding}: MC mean {result.mean[i, k]:.3f} "
                 f"(std {result.std[i, k]:.3f})")
        save_overlay(images[i], heatmap, title, path)
        written[i][finding] = str(path)
    return written


def unique_stems(names: Sequence[str]) -> list[str]:
    """File stems, with `-2`, `-3`, ... added to repeats so that no two images collide."""
    used: set[str] = set()
    stems = []
    for name in names:
        stem = candidate = Path(name).stem
        repeat = 1
        while candidate in used:
            repeat += 1
            candidate = f"{stem}-{repeat}"
        used.add(candidate)
        stems.append(candidate)
    return stems


# --------------------------------------------------------------------------- output


def prediction_rows(names, result, threshold: float, labels: Sequence[str],
                    top: int | None = None, operating: dict | None = None,
                    films: Sequence | None = None) -> list[dict]:
    """One dict per image: `image`, `refer_any`, `referred` (every finding with std above the
    threshold, shown or not), `positive` (every finding whose mean reaches its operating
    threshold, shown or not) and `findings` (canonical order, or the `top` findings by mean,
    highest first), each `{finding, mean, std, refer}` plus `threshold` and `positive` when
    `operating` maps each label to its operating threshold (metadata.json `thresholds`).
    With `films` (one `cxr.data.dicom.DicomFilm` or None per image) also `dicom` (the film's
    identity, null for PNG/JPEG) and `warnings` (the decoder's, [] when none)."""
    refer = result.refer(threshold)
    rows = []
    for i, name in enumerate(names):
        order = range(len(labels))
        if top is not None:
            order = sorted(order, key=lambda k: -float(result.mean[i, k]))[:top]
        findings = [
            {"finding": labels[k], "mean": round(float(result.mean[i, k]), 6),
             "std": round(float(result.std[i, k]), 6), "refer": bool(refer[i, k])}
            for k in order
        ]
        row = {"image": name, "refer_any": bool(refer[i].any()),
               "referred": [labels[k] for k in range(len(labels)) if refer[i, k]]}
        if operating is not None:
            positive = [float(result.mean[i, k]) >= float(operating[labels[k]])
                        for k in range(len(labels))]
            row["positive"] = [labels[k] for k in range(len(labels)) if positive[k]]
            for k, finding in zip(order, findings, strict=True):
                finding["threshold"] = round(float(operating[labels[k]]), 6)
                finding["positive"] = positive[k]
        if films is not None:
            film = films[i]
            row["dicom"] = film.identity() if film is not None else None
            row["warnings"] = list(film.warnings) if film is not None else []
        row["findings"] = findings
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict]) -> str:
    """An aligned block per image: finding, mean, [threshold, positive,] std, refer."""
    width = max(len("finding"), *(len(f["finding"]) for row in rows for f in row["findings"]))
    lines = []
    for row in rows:
        referred = ", ".join(row["referred"]) if row["referred"] else "no"
        operating = "positive" in row
        head = f"{row['image']}  refer: {referred}"
        if operating:
            head += "  positive: " + (", ".join(row["positive"]) if row["positive"] else "none")
        lines.append(head)
        if row.get("dicom"):
            film = row["dicom"]
            lines.append(f"  DICOM  SOP Instance UID {film['sop_instance_uid'] or '-'}  view "
                         f"{film['view_position'] or '-'}  modality {film['modality'] or '-'}")
        lines.extend(f"  warning: {warning}" for warning in row.get("warnings", ()))
        columns = f"  {'finding':<{width}}  {'mean':>6}"
        columns += f"  {'thresh':>6}  positive" if operating else ""
        lines.append(columns + f"  {'std':>6}  refer")
        for finding in row["findings"]:
            line = f"  {finding['finding']:<{width}}  {finding['mean']:6.3f}"
            if operating:
                line += f"  {finding['threshold']:6.3f}  {'yes' if finding['positive'] else '-':<8}"
            flag = "yes" if finding["refer"] else "-"
            lines.append(line + f"  {finding['std']:6.3f}  {flag}")
        lines.append("")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], stream) -> None:
    """Long format: image, finding, mean, std, refer (0/1), then threshold and positive (0/1)
    when the rows carry the model's operating thresholds."""
    operating = any("positive" in row for row in rows)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(["image", "finding", "mean", "std", "refer"]
                    + (["threshold", "positive"] if operating else []))
    for row in rows:
        for finding in row["findings"]:
            extra = ([f"{finding['threshold']:.6g}", int(finding["positive"])] if operating
                     else [])
            writer.writerow([row["image"], finding["finding"], f"{finding['mean']:.6g}",
                             f"{finding['std']:.6g}", int(finding["refer"])] + extra)


if __name__ == "__main__":
    raise SystemExit(main())
