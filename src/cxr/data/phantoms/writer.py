"""generate_phantoms: render the plan and write the NIH-layout files (CSV, boxes, PNGs, lists)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data.phantoms.anatomy import patient_anatomy
from cxr.data.phantoms.config import PhantomConfig
from cxr.data.phantoms.film import draw_films
from cxr.data.phantoms.plan import PlannedImage, plan_dataset
from cxr.data.phantoms.reference import (
    _STREAM_IMAGE,
    BBOX_HEADER,
    BBOX_SPELLING,
    DATA_ENTRY_HEADER,
    IMAGE_NAME,
    TRUTH_HEADER,
)
from cxr.data.phantoms.render import render_image
from cxr.labels import LABELS, NO_FINDING


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RenderTask:
    seed: int
    patient_id: int
    follow_up: int
    findings: tuple[str, ...]
    view: str
    size: int
    strength_range: tuple[float, float]
    path: str


def _render_and_save(task: _RenderTask) -> dict[str, tuple[float, float, float, float]]:
    anatomy = patient_anatomy(task.seed, task.patient_id)
    rng = np.random.default_rng(np.random.SeedSequence(
        [task.seed, _STREAM_IMAGE, task.patient_id, task.follow_up]))
    image, boxes = render_image(rng, task.findings, anatomy, task.size, task.view,
                                task.strength_range)
    Image.fromarray(image).save(task.path, format="PNG", compress_level=1)
    return boxes


def _render_all(tasks: list[_RenderTask], processes: int,
                progress: Callable[[str], None] | None) -> list[dict]:
    if processes > 1:
        # Threads, not processes: numpy's array maths and PIL's PNG encoder release the GIL,
        # and threads need neither fork (unsafe next to TensorFlow's threads) nor spawn
        # (which re-imports the caller's __main__). map() keeps the task order.
        with ThreadPoolExecutor(processes) as pool:
            return _collect(pool.map(_render_and_save, tasks), len(tasks), progress)
    return _collect(map(_render_and_save, tasks), len(tasks), progress)


def _collect(results: Iterable[dict], total: int,
             progress: Callable[[str], None] | None) -> list[dict]:
    collected = []
    next_report = 0.1
    for boxes in results:
        collected.append(boxes)
        if progress is not None and len(collected) >= next_report * total:
            progress(f"phantoms: {len(collected)}/{total} images ({len(collected) / total:.0%})")
            while next_report * total <= len(collected):
                next_report += 0.1
    return collected


def _write_lines(path: Path, header: str, lines: Iterable[str]) -> None:
    text = "\n".join([header, *lines]) + "\n"
    path.write_text(text, encoding="utf-8", newline="")


def _joined(names: tuple[str, ...]) -> str:
    return "|".join(names) if names else NO_FINDING


def _data_entry_rows(plan: list[PlannedImage], seed: int) -> list[str]:
    """Rows in plan order (patient order, as NIH's). OriginalImage = the film, not the PNG."""
    sizes, spacing = draw_films(seed, len(plan))
    return [f"{p.image_index},{_joined(p.labels)},{p.follow_up},{p.patient_id},{p.age},"
            f"{p.gender},{p.view},{w},{h},{s:.3f},{s:.3f}"
            for p, (w, h), s in zip(plan, sizes.tolist(), spacing.tolist(), strict=True)]


def image_folder(position: int, images_per_folder: int) -> str:
    """The download's nesting: image ``position`` (0-based, name order) -> images_001/images."""
    return f"images_{position // images_per_folder + 1:03d}/images"


# NIH writes its boxes in the pixels of its 1024 x 1024 PNGs; the phantoms do the same, so
# their smaller PNGs are what a user's resized copy of the download is (boxes in the 1024 frame).
BOX_FRAME = 1024


def _bbox_rows(plan: list[PlannedImage], boxes: list[dict], image_size: int) -> list[str]:
    scale = BOX_FRAME / image_size
    rows = []
    for planned, image_boxes in zip(plan, boxes, strict=True):
        for name in planned.truth:
            x, y, w, h = (value * scale for value in image_boxes[name])
            label = BBOX_SPELLING.get(name, name)
            rows.append(f"{planned.image_index},{label},{x:.1f},{y:.1f},{w:.1f},{h:.1f},,,")
    return rows


def _remove_stale_images(out: Path, keep: set[Path]) -> None:
    """A rerun with fewer patients (or another nesting) must not leave old PNGs behind."""
    for path in out.rglob("*.png"):
        if IMAGE_NAME.match(path.name) and path not in keep:
            path.unlink()


# NIH's official test list holds 25,596 of 112,120 images (22.8%), whole patients only.
OFFICIAL_TEST_PATIENT_FRACTION = 0.2
_STREAM_OFFICIAL = 7_001


def official_lists(plan: list[PlannedImage], seed: int) -> tuple[list[str], list[str]]:
    """(train_val, test) image names, patient-disjoint, like NIH's train_val_list.txt and
    test_list.txt, so that `split.method: official` runs on phantoms too."""
    patients = sorted({p.patient_id for p in plan})
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_OFFICIAL]))
    n_test = int(np.floor(OFFICIAL_TEST_PATIENT_FRACTION * len(patients) + 0.5))
    test_patients = set(rng.choice(patients, size=n_test, replace=False).tolist())
    names = sorted(plan, key=lambda p: p.image_index)
    test = [p.image_index for p in names if p.patient_id in test_patients]
    train_val = [p.image_index for p in names if p.patient_id not in test_patients]
    return train_val, test


def generate_phantoms(out_dir: str | Path, config: PhantomConfig,
                      progress: Callable[[str], None] | None = print) -> dict:
    """Write the dataset to out_dir; return a summary.

    Summary keys: out_dir, images, patients, positives (published labels per class),
    true_positives (drawn), no_finding (published), boxes, seconds.
    """
    if not isinstance(config, PhantomConfig):
        raise TypeError(f"config must be a PhantomConfig, got {type(config).__name__}")
    started = time.perf_counter()
    out = Path(out_dir)
    plan = plan_dataset(config)
    paths = [out / image_folder(i, config.images_per_folder) / p.image_index
             for i, p in enumerate(plan)]
    if out.is_dir():
        _remove_stale_images(out, set(paths))
    for folder in sorted({path.parent for path in paths}):
        folder.mkdir(parents=True, exist_ok=True)
    if progress is not None:
        progress(f"phantoms: rendering {len(plan)} images of {config.n_patients} patients "
                 f"({config.image_size} px) -> {out}")
    strength_range = (float(config.strength_range[0]), float(config.strength_range[1]))
    tasks = [_RenderTask(config.seed, p.patient_id, p.follow_up, p.truth, p.view,
                         config.image_size, strength_range, str(path))
             for p, path in zip(plan, paths, strict=True)]
    boxes = _render_all(tasks, config.processes, progress)
    # The CSVs come last: a Data_Entry file means every image it lists exists.
    _write_lines(out / "BBox_List_2017.csv", BBOX_HEADER, _bbox_rows(plan, boxes, config.image_size))
    _write_lines(out / "phantom_truth.csv", TRUTH_HEADER,
                 [f"{p.image_index},{_joined(p.truth)}" for p in plan])
    train_val, test = official_lists(plan, config.seed)
    (out / "train_val_list.txt").write_text("".join(f"{name}\n" for name in train_val))
    (out / "test_list.txt").write_text("".join(f"{name}\n" for name in test))
    _write_lines(out / "Data_Entry_2017.csv", DATA_ENTRY_HEADER,
                 _data_entry_rows(plan, config.seed))
    return _summary(out, plan, config, time.perf_counter() - started)


def _summary(out: Path, plan: list[PlannedImage], config: PhantomConfig,
             seconds: float) -> dict:
    def count(attribute: str) -> dict[str, int]:
        return {name: sum(name in getattr(p, attribute) for p in plan) for name in LABELS}

    return {
        "out_dir": str(out),
        "images": len(plan),
        "patients": config.n_patients,
        "positives": count("labels"),
        "true_positives": count("truth"),
        "no_finding": sum(not p.labels for p in plan),
        "boxes": sum(len(p.truth) for p in plan),
        "seconds": round(seconds, 3),
    }

