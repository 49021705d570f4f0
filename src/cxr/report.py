"""The comparison report: Markdown and self-contained HTML built from the same content.

:func:`build_report` turns the report context (a dict the report stage assembles from the
pipeline's JSON files; its layout is documented in :func:`build_report`) into a small document
model (sections of paragraphs, tables, figures and notes), which two renderers write out:

- Markdown that references the PNG figures by relative path;
- HTML that opens offline: inline CSS, figures embedded as base64 data URIs, no URL of any kind
  (no CDN, no web font, no link out). Text that itself holds ``://`` (an MLflow tracking URI in
  the params, say) is written with the colon as a character reference, so it still reads the
  same but never becomes a link and a literal scan for URLs stays clean.

A missing piece (a model without evaluation, a figure file that does not exist, a section whose
numbers are absent) becomes a visible note in both outputs, never an exception.

Pure Python: no TensorFlow, no matplotlib (the figures are drawn by :mod:`cxr.plots`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxr.labels import LABELS

# The published study's test results on real NIH ChestX-ray14, shown beside ours as reference.
# "auc" holds the per-class test AUCs of the study's Table 2, {model: {finding: auc}}. They are
# deliberately empty: the figures were not at hand when this was written and none may be
# invented. Fill them in from the paper and the report shows them; until then those cells read
# "—" with a footnote.
PUBLISHED_STUDY: dict = {
    "models": ("simple_cnn", "densenet121", "efficientnetb0", "fusion"),
    "macro_auc": {
        "simple_cnn": 0.6558,
        "densenet121": 0.7096,
        "efficientnetb0": 0.7363,
        "fusion": 0.8156,
    },
    "auc": {"simple_cnn": {}, "densenet121": {}, "efficientnetb0": {}, "fusion": {}},
}
PUBLISHED_LABEL_NIH = "Published study (real NIH data)"
PUBLISHED_LABEL_PHANTOMS = "Published study (real NIH data; not comparable to phantom results)"
PUBLISHED_MARK = "†"

MODEL_NAMES: dict[str, str] = {
    "simple_cnn": "Simple CNN",
    "densenet121": "DenseNet121",
    "efficientnetb0": "EfficientNetB0",
    "fusion": "Fusion",
}

# (anchor id, heading), in report order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("test-auc", "Test AUC per finding (the study's Table 2 layout)"),
    ("data", "Data"),
    ("model-comparison", "Model comparison"),
    ("calibration", "Calibration"),
    ("uncertainty", "Uncertainty"),
    ("localization", "Localization: do the Grad-CAM heatmaps point at the lesion?"),
    ("training", "Training"),
    ("roc-curves", "ROC curves"),
    ("provenance", "Provenance"),
)
MACRO_ROW = "Macro AUC (95% CI)"
MISSING = "—"
REPORT_MD, REPORT_HTML = "report.md", "report.html"


def published_label(source: str | None) -> str:
    """Heading of the published columns: only real NIH data makes them comparable."""
    return PUBLISHED_LABEL_NIH if source == "nih" else PUBLISHED_LABEL_PHANTOMS


def display_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)


# ---------------------------------------------------------------------------------------------
# Document model: what both renderers understand.


@dataclass
class Text:
    """A run of inline text; plain ``str`` is the same with no styling."""
    text: str
    bold: bool = False
    code: bool = False


@dataclass
class Paragraph:
    parts: list


@dataclass
class Note:
    """A visible remark about something missing or suspicious."""
    parts: list


@dataclass
class Subheading:
    text: str


@dataclass
class Bullets:
    items: list  # each item: a list of inline parts


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list]  # Cell or str
    caption: list = field(default_factory=list)
    footnotes: list = field(default_factory=list)  # each: a list of inline parts
    groups: list[tuple[str, int]] = field(default_factory=list)  # header groups, HTML colspan


@dataclass
class Figure:
    path: str | None
    caption: str


@dataclass
class Figures:
    items: list[Figure]


@dataclass
class Section:
    id: str
    title: str
    blocks: list


# ---------------------------------------------------------------------------------------------
# Public API


def build_report(context: Mapping, markdown_dir=None) -> tuple[str, str]:
    """(markdown, html) of the comparison report.

    ``context`` keys: ``title``, ``generated`` (ISO timestamp), ``data`` ({``source``,
    ``split``: metrics/split.json}), ``models`` ({name: {``eval``: metrics/eval/NAME.json,
    ``train``: metrics/train/NAME.json, ``localize``: metrics/localize/NAME.json, ``figures``:
    {roc, loss, mc_histogram, reliability, localize}}}),
    ``comparisons`` ([{a, b, difference, ci_low, ci_high, p_value}]), ``figures`` ({referral,
    reliability, auc_comparison}) and ``provenance`` ({git_commit, params (flat), mlflow_run_ids,
    dvc_exp_name}). Any of them may be missing.

    Figure paths are read relative to the working directory; the Markdown writes them relative
    to ``markdown_dir`` (where the .md file will live), or as given when it is None.
    """
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a dict, got {type(context).__name__}")
    title = str(context.get("title") or "Chest X-ray classifier comparison")
    generated = context.get("generated")
    sections = [_build_section(section_id, heading, context)
                for section_id, heading in SECTIONS]
    return (_render_markdown(title, generated, sections, markdown_dir),
            _render_html(title, generated, sections))


def write_report(context: Mapping, out_dir) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, page = build_report(context, markdown_dir=out_dir)
    md_path, html_path = out_dir / REPORT_MD, out_dir / REPORT_HTML
    md_path.write_text(markdown, encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path


# ---------------------------------------------------------------------------------------------
# Sections


def _build_section(section_id: str, heading: str, context: Mapping) -> Section:
    builder = _BUILDERS[section_id]
    try:
        blocks = builder(context)
    except Exception as error:  # a malformed piece of context must not cost the whole report
        blocks = [Note([f"This section could not be built from the report context "
                        f"({type(error).__name__}: {error})."])]
    return Section(section_id, heading, blocks)


def _summary(context) -> list:
    source = _get(context, "data", "source")
    evaluated = _evaluated(context)
    blocks: list = []
    if not evaluated:
        blocks.append(Note(["No model has a test evaluation yet, so there is nothing to rank."]))
        blocks.append(Paragraph([_source_sentence(source)]))
        return blocks
    ranked = sorted(evaluated, key=lambda name: -evaluated[name]["macro_auc"])
    best = ranked[0]
    evaluation = evaluated[best]
    parts: list = ["Best model by test macro ROC-AUC: ",
                   Text(display_name(best), bold=True),
                   f", {_auc(evaluation['macro_auc'])}{_ci_text(evaluation)}"]
    size = _sample_size(evaluation)
    parts.append(f" on {size}." if size else ".")
    if len(ranked) > 1:
        parts.append(" Ranking: " + " > ".join(
            f"{display_name(name)} {_auc(evaluated[name]['macro_auc'])}" for name in ranked) + ".")
        parts.append(_lead_sentence(best, ranked[1], context.get("comparisons")))
    parts.append(" " + _source_sentence(source))
    parts.append(" ROC-AUC is the chance that a random positive image scores above a random "
                 "negative one (0.5: chance, 1.0: perfect ranking); the macro value is the "
                 "unweighted mean over the findings that have positives in the test split, and "
                 "its 95% CI comes from bootstrap resamples of the test set.")
    blocks.append(Paragraph(parts))
    missing = [name for name in _models(context) if name not in evaluated]
    if missing:
        blocks.append(Note([f"Not evaluated (left out of the ranking): "
                            f"{', '.join(display_name(m) for m in missing)}."]))
    return blocks


def _source_sentence(source) -> str:
    if source == "phantoms":
        return ("The data are synthetic phantoms in the NIH layout with planted findings: the "
                "numbers show that the pipeline works end to end, not how well a model reads "
                "real chest X-rays, and they are not comparable with the published study.")
    if source == "nih":
        return ("The data are the real NIH ChestX-ray14 images, split by patient, so the "
                "numbers can be set beside the published study's.")
    return f"Data source: {source if source else 'not recorded'}."


def _lead_sentence(best: str, second: str, comparisons) -> str:
    row = _comparison(comparisons, best, second)
    if row is None:
        return (f" No paired comparison of {display_name(best)} with {display_name(second)} "
                "was recorded.")
    difference, low, high = row
    text = (f" Its lead over {display_name(second)} is {_signed(difference)} (95% CI "
            f"{_signed(low)} to {_signed(high)}")
    p_value = _comparison_p(comparisons, best, second)
    text += f", p {_p_value_phrase(p_value)})" if p_value is not None else ")"
    if low is not None and high is not None and low <= 0 <= high:
        text += ", not significant at the 5% level: the interval includes 0."
    else:
        text += "."
    return text


def _test_auc(context) -> list:
    source = _get(context, "data", "source")
    models = _models(context)
    evaluated = _evaluated(context)
    label = published_label(source)
    published = list(PUBLISHED_STUDY["models"])
    blocks: list = []
    for name in models:
        if name not in evaluated:
            blocks.append(Note([f"No test evaluation for {display_name(name)} "
                                f"(metrics/eval/{name}.json missing or without macro_auc); "
                                f"its column reads {MISSING}."]))
    if not models:
        blocks.append(Note(["No models in the report context."]))

    columns = (["Finding"] + [display_name(name) for name in models]
               + [f"{display_name(name)} {PUBLISHED_MARK}" for name in published])
    rows = []
    for finding in LABELS:
        ours = [_class_auc_cell(evaluated.get(name), finding) for name in models]
        reference = [_published_cell(name, finding) for name in published]
        rows.append([Cell(finding)] + _bold_best(ours) + reference)
    macro = [(_num(_get(evaluated.get(name), "macro_auc")),
              _auc_with_ci(evaluated.get(name))) for name in models]
    reference = [Cell(_auc(_get(PUBLISHED_STUDY, "macro_auc", name), digits=4))
                 for name in published]
    rows.append([Cell(MACRO_ROW, bold=True)] + _bold_best(macro) + reference)

    footnotes: list = [
        ["Bold: the best of this run's models in each row (published columns excluded)."],
        ["n/a: the finding has no positives (or no negatives) in the test split, so it has no "
         "ROC-AUC; it is left out of the macro average."],
        [f"{PUBLISHED_MARK} {label}: test macro AUCs as published."],
    ]
    if any(not PUBLISHED_STUDY["auc"].get(name) for name in published):
        footnotes.append([f"{PUBLISHED_MARK} Per-class figures from the study's Table 2 are to "
                          "be filled in ", Text("PUBLISHED_STUDY", code=True), " (",
                          Text("src/cxr/report.py", code=True), f"); until then they read "
                          f"{MISSING}."])
    n_boot = {_get(e, "n_boot") for e in evaluated.values()} - {None}
    if n_boot:
        footnotes.append([f"95% CI of the macro AUC: {', '.join(map(str, sorted(n_boot)))} "
                          "bootstrap resamples of the test set."])
    blocks.append(Table(
        columns, rows,
        caption=[Text(f"{PUBLISHED_MARK} = {label}", bold=True)],
        footnotes=footnotes,
        groups=[("", 1), ("This run", len(models)), (f"{PUBLISHED_MARK} {label}", len(published))]
        if models else [("", 1), (f"{PUBLISHED_MARK} {label}", len(published))],
    ))
    if _get(context, "figures", "auc_comparison") is not None or evaluated:
        blocks.append(Figure(_get(context, "figures", "auc_comparison"),
                             "Test ROC-AUC per finding and model"))
    return blocks


def _class_auc_cell(evaluation, finding: str) -> tuple[float | None, str]:
    """(value for ranking, text) of one model's AUC for one finding."""
    if evaluation is None:
        return None, MISSING
    value = _num(_get(evaluation, "auc", finding))
    if value is not None:
        return value, _auc(value)
    reason = _get(evaluation, "no_auc", finding)
    return None, f"n/a ({reason})" if reason else "n/a"


def _published_cell(model: str, finding: str) -> Cell:
    value = _num(_get(PUBLISHED_STUDY, "auc", model, finding))
    return Cell(_auc(value, digits=4) if value is not None else MISSING)


def _bold_best(values: list[tuple[float | None, str]]) -> list[Cell]:
    numbers = [value for value, _ in values if value is not None]
    best = max(numbers) if numbers else None
    return [Cell(text, bold=best is not None and value is not None and value == best)
            for value, text in values]


def _data(context) -> list:
    source = _get(context, "data", "source")
    split = _get(context, "data", "split")
    blocks: list = [Paragraph([_source_sentence(source)])]
    if not isinstance(split, Mapping):
        blocks.append(Note(["No split summary (metrics/split.json) in the report context."]))
        return blocks
    splits = split.get("splits") or {}
    names = [name for name in ("train", "val", "test") if name in splits]
    names += [name for name in splits if name not in names]
    rows = [[name, _int(_get(splits, name, "images")), _int(_get(splits, name, "patients")),
             _percent(_get(splits, name, "image_fraction"))] for name in names]
    rows.append([Cell("all", bold=True), _int(split.get("images")), _int(split.get("patients")),
                 "100%"])
    blocks.append(Table(["Split", "Images", "Patients", "Share of images"], rows))

    if names:
        prevalence_rows = []
        for finding in LABELS:
            row = [finding]
            for name in names:
                positives = _get(splits, name, "positives", finding)
                share = _get(splits, name, "prevalence", finding)
                row.append(MISSING if positives is None else
                           f"{_int(positives)} ({_percent(share, 1)})")
            prevalence_rows.append(row)
        blocks.append(Table(["Finding"] + [f"{name}: positives (prevalence)" for name in names],
                            prevalence_rows,
                            footnotes=[["A finding with 0 positives in test has no test AUC."]]))

    overlap = split.get("patient_overlap") or {}
    if overlap:
        rows, leaking = [], []
        for pair, entry in overlap.items():
            shared = _get(entry, "shared_patients")
            image_share = next((v for k, v in (entry or {}).items() if k != "shared_patients"),
                               None)
            rows.append([pair, _int(shared), _percent(image_share)])
            if _num(shared):
                leaking.append(pair)
        blocks.append(Table(["Splits", "Shared patients (0 expected)",
                             "Images of the second split whose patient is in the first"], rows))
        if leaking:
            blocks.append(Note([f"Patients shared between splits ({', '.join(leaking)}): the "
                                "test set is not independent of training."]))
        else:
            blocks.append(Paragraph(["No patient appears in two splits, as a patient-level "
                                     "split guarantees."]))
    else:
        blocks.append(Note(["No patient overlap figures in the split summary."]))

    leak = split.get("leak_if_image_level")
    share = _num(_get(leak, "test_images_with_patient_in_train"))
    if share is not None:
        blocks.append(Paragraph([
            "Why split by patient: had the images been split at image level instead, ",
            Text(f"{_percent(share)} of test images belong to a patient also in train",
                 bold=True),
            f" ({_int(_get(leak, 'shared_patients'))} patients shared), so the test score would "
            "partly measure recognising patients already seen."]))
    else:
        blocks.append(Note(["The image-level leak estimate (leak_if_image_level) is missing."]))
    return blocks


def _model_comparison(context) -> list:
    comparisons = context.get("comparisons") or []
    blocks: list = [Paragraph([
        "Paired bootstrap: both models are scored on the same resamples of the test images, so "
        "the interval reflects the difference itself, not two separate uncertainties. A "
        "difference whose 95% CI excludes 0 is significant at the 5% level."])]
    if not comparisons:
        blocks.append(Note(["No pairwise comparisons were recorded (they need at least two "
                            "evaluated models)."]))
        return blocks
    rows = []
    for entry in comparisons:
        a, b = str(_get(entry, "a")), str(_get(entry, "b"))
        low, high = _num(_get(entry, "ci_low")), _num(_get(entry, "ci_high"))
        difference = _num(_get(entry, "difference"))
        if low is None or high is None:
            verdict = MISSING
        elif low > 0:
            verdict = f"{display_name(a)} better"
        elif high < 0:
            verdict = f"{display_name(b)} better"
        else:
            verdict = "no significant difference"
        rows.append([f"{display_name(a)} vs {display_name(b)}", _signed(difference),
                     f"{_signed(low)} to {_signed(high)}", _p_text(_get(entry, "p_value")),
                     verdict])
    blocks.append(Table(["Comparison (A vs B)", "Macro AUC difference (A − B)", "95% CI",
                         "p-value", "Verdict"], rows))
    return blocks


def _calibration(context) -> list:
    blocks: list = [Paragraph([
        "Expected calibration error (ECE): the gap between predicted probability and observed "
        "frequency, averaged over probability bins; Brier score: mean squared error of the "
        "probabilities. Lower is better for both; both are averaged over the findings."])]
    rows = []
    for name in _models(context):
        calibration = _get(context, "models", name, "eval", "calibration")
        per_class = _get(calibration, "per_class") or {}
        worst = [(finding, _num(_get(entry, "ece"))) for finding, entry in per_class.items()]
        worst = [pair for pair in worst if pair[1] is not None]
        worst_text = MISSING
        if worst:
            finding, value = max(worst, key=lambda pair: pair[1])
            worst_text = f"{finding} ({_fixed(value)})"
        rows.append([display_name(name), _fixed(_get(calibration, "ece")),
                     _fixed(_get(calibration, "brier")), worst_text])
    if rows:
        blocks.append(Table(["Model", "ECE", "Brier score", "Worst-calibrated finding (ECE)"],
                            rows))
    else:
        blocks.append(Note(["No models in the report context."]))
    blocks.append(Figure(_get(context, "figures", "reliability"),
                         "Reliability diagram: all models on the test set"))
    blocks += _model_figures(context, "reliability", "reliability diagram per finding")
    return blocks


def _uncertainty(context) -> list:
    blocks: list = [Paragraph([
        "Monte-Carlo dropout: each test image is scored several times with dropout left on; "
        "the spread (std) of its probabilities measures how unsure the model is. Images above "
        "the std threshold are referred to a radiologist; the referral curve shows the macro "
        "AUC on the images the model keeps as more uncertain images are referred."])]
    rows = []
    for name in _models(context):
        evaluation = _get(context, "models", name, "eval")
        mc = _get(evaluation, "mc_dropout")
        referral = _get(evaluation, "referral")
        curve = _get(referral, "curve") or []
        rows.append([display_name(name), _int(_get(mc, "passes")),
                     _fixed(_get(mc, "threshold")), _percent(_get(mc, "referred_images_fraction")),
                     _fixed(_get(mc, "mean_std")), _auc(_curve_auc(curve, 0.0)),
                     _auc(_curve_auc(curve, 0.2)), _signed(_get(referral, "gain_at_20"))])
    if rows:
        blocks.append(Table(["Model", "MC passes", "Std threshold", "Images referred",
                             "Mean std", "Macro AUC, all images", "Macro AUC, 20% referred",
                             "Gain at 20% referred"], rows))
    else:
        blocks.append(Note(["No models in the report context."]))
    blocks.append(Figure(_get(context, "figures", "referral"),
                         "Referral curve: macro AUC on the kept images vs fraction referred"))
    blocks += _model_figures(context, "mc_histogram",
                             "MC-dropout probabilities for one test image")
    return blocks


def _localization(context) -> list:
    source = _get(context, "data", "source")
    truth = ("the phantom generator's box file, which knows every planted lesion"
             if source == "phantoms" else
             "NIH's BBox_List_2017.csv (984 boxes drawn by radiologists, 8 findings)"
             if source == "nih" else "the data's box file")
    blocks: list = [Paragraph([
        "Grad-CAM heatmaps of each test image that has a lesion box, for the box's finding, "
        f"scored against the box (ground truth: {truth}). ",
        Text("Pointing game", bold=True), ": the share of boxes that contain the heatmap's "
        "peak. ", Text("Chance", bold=True), ": the boxes' mean share of the image, the hit "
        "rate of a peak placed at random; large boxes (an enlarged heart, both lungs) are easy "
        "targets. ", Text("IoU", bold=True), ": overlap of the heatmap above a fraction of its "
        "maximum with the box. A heatmap without positive evidence for the finding (flat) "
        "counts as a miss with IoU 0."])]
    models = _models(context)
    results = {name: _get(context, "models", name, "localize") for name in models}
    results = {name: value for name, value in results.items() if isinstance(value, Mapping)}
    missing = [name for name in models if name not in results]
    if not results:
        blocks.append(Note(["No localization results (metrics/localize/NAME.json) in the "
                            "report context."]))
        return blocks
    if missing:
        blocks.append(Note([f"No localization results for "
                            f"{', '.join(display_name(m) for m in missing)}."]))
    shown = [name for name in models if name in results]

    def entry(name, finding):
        return _get(results[name], "per_finding", finding)

    findings = [finding for finding in LABELS
                if any(_num(_get(entry(name, finding), "n")) for name in shown)]
    compare = len(shown) > 1
    rows = []
    for finding in findings:
        entries = [entry(name, finding) for name in shown]
        rows.append(_localization_row(finding, entries, compare))
    overall = [_get(results[name], "overall") for name in shown]
    rows.append(_localization_row("All boxes (pooled)", overall, compare, bold=True))
    macro = [{"n": None, "chance": None, "pointing": _get(o, "pointing_macro"),
              "iou_mean": _get(o, "iou_macro")} for o in overall]
    rows.append(_localization_row("Mean over findings", macro, compare, bold=True))
    columns = ["Finding", "Boxes", "Chance"]
    for name in shown:
        columns += [f"{display_name(name)}: pointing", f"{display_name(name)}: IoU"]
    footnotes: list = [["Bold: the best pointing-game score in each row."]] if compare else []
    no_boxes = [finding for finding in LABELS if finding not in findings]
    if no_boxes:
        footnotes.append([f"No boxes scored for: {', '.join(no_boxes)}."])
    thresholds = {_num(_get(results[n], "iou_threshold")) for n in shown} - {None}
    if thresholds:
        footnotes.append(["IoU: heatmap binarised at "
                          + " / ".join(f"{t:g}" for t in sorted(thresholds))
                          + " of its maximum."])
    blocks.append(Table(columns, rows, footnotes=footnotes,
                        groups=[("", 3)] + [(display_name(n), 2) for n in shown]))
    for name in shown:
        flat, n = (_num(_get(results[name], "overall", key)) for key in ("flat", "n"))
        if flat and n and flat / n > 0.5:
            blocks.append(Note([
                f"{display_name(name)}: {_int(flat)} of {_int(n)} heatmaps are flat: nothing in "
                "the image speaks for the boxed finding (every position's Grad-CAM sum is <= 0), "
                "so its pointing score shows missing positive evidence, not where it looks."]))

    detail = []
    for name in shown:
        result = results[name]
        flat, n = _get(result, "overall", "flat"), _get(result, "overall", "n")
        per_heatmap = _num(result.get("seconds_per_heatmap"))
        detail.append([display_name(name), str(result.get("layer") or MISSING),
                       _int(result.get("image_size")),
                       f"{_int(result.get('images_scored'))} of "
                       f"{_int(result.get('test_images_with_boxes'))}",
                       f"{_int(flat)} of {_int(n)}",
                       MISSING if per_heatmap is None else f"{per_heatmap * 1000:.1f} ms"])
    blocks.append(Table(["Model", "Layer explained", "Input (px)",
                         "Test images scored (of those with a box)", "Flat heatmaps",
                         "Time per heatmap"], detail,
                        footnotes=[["Time per heatmap: one Grad-CAM (forward and backward "
                                    "pass) in batches, after the one-off tracing."]]))
    blocks += _model_figures(context, "localize",
                             "Grad-CAM examples per finding (box white, peak green)")
    return blocks


def _localization_row(label: str, entries: list, compare: bool, bold: bool = False) -> list:
    counts = {_int(_get(e, "n")) for e in entries if _num(_get(e, "n")) is not None}
    chances = [_num(_get(e, "chance")) for e in entries if _num(_get(e, "chance")) is not None]
    pointing = [(_num(_get(e, "pointing")), _fixed(_get(e, "pointing"))) for e in entries]
    cells = [Cell(label, bold=bold), " / ".join(sorted(counts)) or MISSING,
             _fixed(chances[0]) if chances else MISSING]
    pointing_cells = _bold_best(pointing) if compare else [Cell(text) for _, text in pointing]
    for best_cell, e in zip(pointing_cells, entries, strict=True):
        cells += [best_cell, _fixed(_get(e, "iou_mean"))]
    return cells


def _training(context) -> list:
    rows = []
    for name in _models(context):
        train = _get(context, "models", name, "train")
        if not isinstance(train, Mapping):
            rows.append([display_name(name)] + [MISSING] * 6)
            continue
        epochs = train.get("epochs") or {}
        epochs_text = ", ".join(f"{phase} {_int(n)}" for phase, n in epochs.items()) or MISSING
        rows.append([display_name(name), epochs_text, _duration(train.get("train_seconds")),
                     _fixed(train.get("train_images_per_second"), 1),
                     _int(train.get("parameters")), _auc(train.get("val_macro_auc")),
                     str(train.get("mlflow_run_id") or MISSING)])
    blocks: list = []
    missing = [name for name in _models(context)
               if not isinstance(_get(context, "models", name, "train"), Mapping)]
    if missing:
        blocks.append(Note([f"No training summary (metrics/train/NAME.json) for "
                            f"{', '.join(display_name(m) for m in missing)}."]))
    if rows:
        blocks.append(Table(["Model", "Epochs per phase", "Training time", "Images/s",
                             "Parameters", "Validation macro AUC", "MLflow run"], rows))
    else:
        blocks.append(Note(["No models in the report context."]))
    blocks += _model_figures(context, "loss", "loss and AUC per epoch")
    return blocks


def _roc_curves(context) -> list:
    blocks = _model_figures(context, "roc", "per-finding ROC curves on the test set")
    return blocks or [Note(["No models in the report context."])]


def _provenance(context) -> list:
    provenance = context.get("provenance")
    if not isinstance(provenance, Mapping):
        return [Note(["No provenance in the report context."])]
    blocks: list = [Bullets([
        ["Git commit: ", Text(str(provenance.get("git_commit") or "not recorded"), code=True)],
        ["DVC experiment: ", Text(str(provenance.get("dvc_exp_name") or "not recorded"),
                                  code=True)],
        ["Report generated: ", str(context.get("generated") or "not recorded")],
    ])]
    run_ids = provenance.get("mlflow_run_ids") or {}
    if run_ids:
        blocks.append(Subheading("MLflow runs"))
        blocks.append(Table(["Stage", "MLflow run id"],
                            [[str(stage), str(run)] for stage, run in run_ids.items()]))
    else:
        blocks.append(Note(["No MLflow run ids recorded."]))
    params = provenance.get("params") or {}
    if params:
        blocks.append(Subheading("Parameters"))
        blocks.append(Table(["Parameter", "Value"],
                            [[str(key), _param_text(params[key])] for key in sorted(params)]))
    else:
        blocks.append(Note(["No parameters recorded."]))
    return blocks


_BUILDERS = {
    "summary": _summary,
    "test-auc": _test_auc,
    "data": _data,
    "model-comparison": _model_comparison,
    "calibration": _calibration,
    "uncertainty": _uncertainty,
    "localization": _localization,
    "training": _training,
    "roc-curves": _roc_curves,
    "provenance": _provenance,
}


def _model_figures(context, key: str, what: str) -> list:
    """One figure per model in a grid; a model without the figure gets a note there."""
    items = [Figure(_get(context, "models", name, "figures", key),
                    f"{display_name(name)}: {what}") for name in _models(context)]
    return [Figures(items)] if items else []


# ---------------------------------------------------------------------------------------------
# Reading the context


def _get(mapping, *keys):
    """Nested lookup that answers None for anything missing or not a dict on the way."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _models(context) -> list[str]:
    """Model names: the study's order first, then any others as given."""
    models = context.get("models")
    if not isinstance(models, Mapping):
        return []
    known = [name for name in PUBLISHED_STUDY["models"] if name in models]
    return known + [str(name) for name in models if name not in known]


def _evaluated(context) -> dict[str, Mapping]:
    """{model: eval dict} for the models whose evaluation has a macro AUC."""
    result = {}
    for name in _models(context):
        evaluation = _get(context, "models", name, "eval")
        if isinstance(evaluation, Mapping) and _num(evaluation.get("macro_auc")) is not None:
            result[name] = {**evaluation, "macro_auc": _num(evaluation["macro_auc"])}
    return result


def _comparison(comparisons, first: str, second: str):
    """(difference, low, high) of ``first`` - ``second``, whichever order it was stored in."""
    for entry in comparisons or []:
        a, b = _get(entry, "a"), _get(entry, "b")
        values = [_num(_get(entry, key)) for key in ("difference", "ci_low", "ci_high")]
        if (a, b) == (first, second):
            return tuple(values)
        if (a, b) == (second, first):
            difference, low, high = values
            return (_negate(difference), _negate(high), _negate(low))
    return None


def _comparison_p(comparisons, first: str, second: str):
    for entry in comparisons or []:
        if {_get(entry, "a"), _get(entry, "b")} == {first, second}:
            return _num(_get(entry, "p_value"))
    return None


def _curve_auc(curve, fraction: float) -> float | None:
    """Macro AUC of the referral-curve point nearest ``fraction`` referred."""
    points = [(abs(_num(_get(p, "referred_fraction")) - fraction), _num(_get(p, "macro_auc")))
              for p in curve if _num(_get(p, "referred_fraction")) is not None]
    points = [point for point in points if point[1] is not None and point[0] <= 0.05]
    return min(points)[1] if points else None


def _sample_size(evaluation) -> str:
    images, patients = evaluation.get("n_images"), evaluation.get("n_patients")
    if images is None:
        return ""
    text = f"{_int(images)} test images"
    return text + (f" from {_int(patients)} patients" if patients is not None else "")


# ---------------------------------------------------------------------------------------------
# Formatting numbers


def _num(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _negate(value):
    return None if value is None else -value


def _auc(value, digits: int = 3) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value:.{digits}f}"


def _fixed(value, digits: int = 3) -> str:
    return _auc(value, digits)


def _signed(value, digits: int = 3) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value:+.{digits}f}"


def _ci_text(evaluation) -> str:
    low, high = _num(evaluation.get("macro_auc_ci_low")), _num(evaluation.get("macro_auc_ci_high"))
    return "" if low is None or high is None else f" (95% CI {low:.3f}–{high:.3f})"


def _auc_with_ci(evaluation) -> str:
    if evaluation is None:
        return MISSING
    low, high = _num(evaluation.get("macro_auc_ci_low")), _num(evaluation.get("macro_auc_ci_high"))
    # on its own line in HTML, so the table stays narrow enough for the page
    ci = "" if low is None or high is None else f"\n({low:.3f}–{high:.3f})"
    return _auc(evaluation.get("macro_auc")) + ci


def _percent(value, digits: int = 1) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value * 100:.{digits}f}%"


def _int(value) -> str:
    value = _num(value)
    return MISSING if value is None else f"{int(round(value)):,}"


def _p_text(value) -> str:
    value = _num(value)
    if value is None:
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _p_value_phrase(value) -> str:
    """"= 0.012" or "< 0.001", to follow a "p"."""
    text = _p_text(value)
    return text if text.startswith("<") else f"= {text}"


def _duration(seconds) -> str:
    seconds = _num(seconds)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _param_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# Figures on disk


def _figure_file(path) -> Path | None:
    if path is None:
        return None
    candidate = Path(path)
    return candidate if candidate.is_file() and candidate.stat().st_size > 0 else None


def _figure_problem(figure: Figure) -> str:
    if figure.path is None:
        return f"Figure not available: {figure.caption} (no path in the report context)."
    return f"Figure not available: {figure.caption} ({figure.path} does not exist or is empty)."


def _image_mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


# ---------------------------------------------------------------------------------------------
# Markdown


def _render_markdown(title: str, generated, sections: list[Section], markdown_dir) -> str:
    lines = [f"# {_md(title)}", ""]
    if generated:
        lines += [f"Generated {_md(str(generated))}.", ""]
    lines += ["Contents: " + " · ".join(f"[{_md(s.title)}](#{s.id})" for s in sections), ""]
    for section in sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {_md(section.title)}", ""]
        for block in section.blocks:
            lines += _md_block(block, markdown_dir) + [""]
    return "\n".join(lines).rstrip() + "\n"


def _md_block(block, markdown_dir) -> list[str]:
    if isinstance(block, Paragraph):
        return [_md_inline(block.parts)]
    if isinstance(block, Note):
        return ["> **Note:** " + _md_inline(block.parts)]
    if isinstance(block, Subheading):
        return [f"### {_md(block.text)}"]
    if isinstance(block, Bullets):
        return [f"- {_md_inline(item)}" for item in block.items]
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return _md_figure(block, markdown_dir)
    if isinstance(block, Figures):
        lines: list[str] = []
        for figure in block.items:
            lines += _md_figure(figure, markdown_dir) + [""]
        return lines[:-1]
    raise TypeError(f"unknown block {type(block).__name__}")


def _md_table(table: Table) -> list[str]:
    lines = [_md_inline(table.caption), ""] if table.caption else []
    lines.append("| " + " | ".join(_md(column) for column in table.columns) + " |")
    lines.append("| --- " + "| ---: " * (len(table.columns) - 1) + "|")
    for row in table.rows:
        cells = []
        for cell in row:
            cell = cell if isinstance(cell, Cell) else Cell(str(cell))
            text = _md(cell.text)
            cells.append(f"**{text}**" if cell.bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    if table.footnotes:
        lines.append("")
        lines += [f"<sub>{_md_inline(note)}</sub><br>" for note in table.footnotes]
    return lines


def _md_figure(figure: Figure, markdown_dir) -> list[str]:
    if _figure_file(figure.path) is None:
        return ["> **Note:** " + _md(_figure_problem(figure))]
    target = str(figure.path)
    if markdown_dir is not None:
        target = os.path.relpath(Path(figure.path).resolve(), Path(markdown_dir).resolve())
    target = Path(target).as_posix().replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return [f"![{_md(figure.caption)}]({target})", "", f"*{_md(figure.caption)}*"]


def _md_inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Text):
            if part.code:
                out.append(f"`{part.text.replace('`', '')}`")
            else:
                out.append(f"**{_md(part.text)}**" if part.bold else _md(part.text))
        else:
            out.append(_md(str(part)))
    return "".join(out)


def _md(text: str) -> str:
    """Markdown-safe text: HTML special characters escaped, table pipes escaped."""
    return html.escape(text, quote=False).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# HTML

_NUMERIC = re.compile(r"^[+\-−<]?\s?[\d.,]+(%| s| min| h|\b)")
_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; color: #1d2330; background: #ffffff; margin: 0; line-height: 1.5; }
main, header { max-width: 1180px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 24px; border-bottom: 1px solid #d8dde6; padding-bottom: 12px; }
h1 { font-size: 1.7rem; margin: 0 0 4px 0; }
h2 { font-size: 1.3rem; margin: 36px 0 12px 0; padding-bottom: 4px;
  border-bottom: 2px solid #2f6db5; }
h3 { font-size: 1.05rem; margin: 20px 0 8px 0; }
.generated { color: #5b6475; margin: 0 0 10px 0; font-size: 0.9rem; }
nav ol { display: flex; flex-wrap: wrap; gap: 4px 18px; padding: 0; margin: 0;
  list-style: none; counter-reset: section; font-size: 0.92rem; }
nav a { color: #2f6db5; text-decoration: none; }
nav a:hover { text-decoration: underline; }
p { margin: 8px 0; }
.note { background: #fff5e0; border-left: 4px solid #e08a00; padding: 6px 12px;
  margin: 10px 0; }
.table-wrap { overflow-x: auto; margin: 10px 0 16px 0; }
table { border-collapse: collapse; font-size: 0.86rem; }
caption { caption-side: top; text-align: left; padding: 4px 0; font-size: 0.88rem; }
th, td { border: 1px solid #d8dde6; padding: 4px 9px; vertical-align: top; }
th { background: #eef2f8; text-align: center; font-weight: 600; }
thead tr.groups th { background: #dfe6f1; }
td { text-align: left; }
td.num { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
td.missing { text-align: center; color: #8a91a0; }
td.na { text-align: center; color: #6b7280; font-size: 0.78rem; }
td:first-child { text-align: left; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #f8f9fc; }
tfoot td { text-align: left; background: #ffffff; border: none; color: #5b6475;
  font-size: 0.8rem; padding: 2px 0; white-space: normal; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: 0.88em; background: #f1f3f7; padding: 1px 4px; border-radius: 3px; }
figure { margin: 12px 0; }
/* never wider than the column, never blown up beyond the PNG's own size */
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e3e7ee; }
figcaption { color: #5b6475; font-size: 0.85rem; margin-top: 4px; }
.figures { display: flex; flex-direction: column; gap: 18px; margin: 12px 0; }
.figures figure, .figures .note { margin: 0; }
@media print { h2 { page-break-after: avoid; } figure { page-break-inside: avoid; } }
"""


def _render_html(title: str, generated, sections: list[Section]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{_esc(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
           "<header>", f"<h1>{_esc(title)}</h1>"]
    if generated:
        out.append(f'<p class="generated">Generated {_esc(str(generated))}</p>')
    out.append("<nav><ol>" + "".join(f'<li><a href="#{s.id}">{_esc(s.title)}</a></li>'
                                     for s in sections) + "</ol></nav>")
    out += ["</header>", "<main>"]
    for section in sections:
        out.append(f'<section id="{section.id}">')
        out.append(f"<h2>{_esc(section.title)}</h2>")
        out += [_html_block(block) for block in section.blocks]
        out.append("</section>")
    out += ["</main>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


def _html_block(block) -> str:
    if isinstance(block, Paragraph):
        return f"<p>{_html_inline(block.parts)}</p>"
    if isinstance(block, Note):
        return f'<p class="note"><strong>Note:</strong> {_html_inline(block.parts)}</p>'
    if isinstance(block, Subheading):
        return f"<h3>{_esc(block.text)}</h3>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        return _html_figure(block)
    if isinstance(block, Figures):
        return ('<div class="figures">' + "".join(_html_figure(f) for f in block.items)
                + "</div>")
    raise TypeError(f"unknown block {type(block).__name__}")


def _html_table(table: Table) -> str:
    out = ['<div class="table-wrap"><table>']
    if table.caption:
        out.append(f"<caption>{_html_inline(table.caption)}</caption>")
    out.append("<thead>")
    if table.groups:
        out.append('<tr class="groups">' + "".join(
            f'<th colspan="{span}">{_esc(label)}</th>' for label, span in table.groups if span)
            + "</tr>")
    out.append("<tr>" + "".join(f'<th scope="col">{_esc(c)}</th>' for c in table.columns)
               + "</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for cell in row:
            cell = cell if isinstance(cell, Cell) else Cell(str(cell))
            text = _esc(cell.text).replace("\n", "<br>")
            text = f"<strong>{text}</strong>" if cell.bold else text
            kind = _cell_kind(cell.text)
            cells.append(f'<td class="{kind}">{text}</td>' if kind else f"<td>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>")
    if table.footnotes:
        out.append("<tfoot>" + "".join(
            f'<tr><td colspan="{len(table.columns)}">{_html_inline(note)}</td></tr>'
            for note in table.footnotes) + "</tfoot>")
    out.append("</table></div>")
    return "".join(out)


def _cell_kind(text: str) -> str | None:
    """CSS class of a cell: numbers right-aligned, gaps and n/a muted, text as is."""
    if text == MISSING:
        return "missing"
    if text.startswith("n/a"):
        return "na"
    if _NUMERIC.match(text):
        return "num"
    return None


def _html_figure(figure: Figure) -> str:
    file = _figure_file(figure.path)
    data = file.read_bytes() if file is not None else b""
    mime = _image_mime(data)
    if file is None:
        return f'<p class="note"><strong>Note:</strong> {_esc(_figure_problem(figure))}</p>'
    if mime is None:
        problem = f"Figure {figure.path} is not a PNG or JPEG image; not embedded."
        return f'<p class="note"><strong>Note:</strong> {_esc(problem)}</p>'
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{encoded}" alt="{_esc(figure.caption)}">'
            f"<figcaption>{_esc(figure.caption)}</figcaption></figure>")


def _html_inline(parts) -> str:
    out = []
    for part in parts:
        if isinstance(part, Text):
            text = _esc(part.text)
            if part.code:
                text = f"<code>{text}</code>"
            out.append(f"<strong>{text}</strong>" if part.bold else text)
        else:
            out.append(_esc(str(part)))
    return "".join(out)


def _esc(text: str) -> str:
    """HTML-escaped text; "://" written with the colon as a reference (see module docstring)."""
    return html.escape(text, quote=True).replace("://", "&#58;//")
