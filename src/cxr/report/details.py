"""Section builders for the details: calibration, uncertainty, localization, training, ROC, provenance."""

from __future__ import annotations

from collections.abc import Mapping

from cxr.labels import LABELS
from cxr.report.document import (
    MISSING,
    Bullets,
    Cell,
    Figure,
    Figures,
    Note,
    Paragraph,
    Subheading,
    Table,
    Text,
    display_name,
)
from cxr.report.formatting import (
    _absent_notes,
    _auc,
    _curve_auc,
    _duration,
    _fixed,
    _get,
    _int,
    _models,
    _num,
    _param_text,
    _percent,
    _signed_gain,
)
from cxr.report.headline import _bold_best


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
        "the spread (std) of its probabilities measures how unsure the model is. A finding "
        "whose std exceeds the std threshold is flagged for a radiologist (the study's rule; "
        "\"Images referred\" below). The referral curve ranks images by how many of their calls "
        "the spread puts in doubt (the decision flip, below) and shows the macro AUC on the "
        "images the model keeps as more of them are referred."])]
    rows = []
    for name in _models(context):
        evaluation = _get(context, "models", name, "eval")
        mc = _get(evaluation, "mc_dropout")
        referral = _get(evaluation, "referral")
        curve = _get(referral, "curve") or []
        rows.append([display_name(name), _int(_get(mc, "passes")),
                     _fixed(_get(mc, "threshold")), _percent(_get(mc, "referred_images_fraction")),
                     _fixed(_get(mc, "mean_std")), _auc(_curve_auc(curve, 0.0)),
                     _auc(_curve_auc(curve, 0.2)), _signed_gain(_get(referral, "gain_at_20"))])
    if rows:
        blocks.append(Table(["Model", "MC passes", "Std threshold", "Images referred",
                             "Mean std", "Macro AUC, all images", "Macro AUC, 20% referred",
                             "Gain at 20% referred"], rows))
    else:
        blocks.append(Note(["No models in the report context."]))
    blocks.append(Figure(_get(context, "figures", "referral"),
                         "Referral curve: macro AUC on the kept images vs fraction referred"))
    blocks += _referral_controls(context)
    blocks += _model_figures(context, "mc_histogram",
                             "MC-dropout probabilities for one test image")
    return blocks


def _referral_controls(context) -> list:
    """Why referral helps or not: the gain beside its controls (cxr.report.uncertainty)."""
    controls = {name: _get(context, "models", name, "referral_controls")
                for name in _models(context)}
    controls = {name: entry for name, entry in controls.items() if isinstance(entry, Mapping)}
    if not controls:
        return []
    at = _num(next(iter(controls.values())).get("referred_fraction")) or 0.2
    rows = [[display_name(name), _signed_gain(_get(c, "gain_flip")),
             _signed_gain(_get(c, "gain_flip_mean_spread")), _signed_gain(_get(c, "gain_std")),
             _signed_gain(_get(c, "gain_top_probability")), _signed_gain(_get(c, "gain_random")),
             f"{_auc(_get(c, 'auc_referred'))} / {_auc(_get(c, 'auc_kept'))}",
             _fixed(_get(c, "std_probability_spearman"), 2),
             f"{_percent(_get(c, 'abnormal_share_referred'))} "
             f"({_percent(_get(c, 'abnormal_share_all'))})",
             _percent(_get(c, "positives_referred_share"), 0)]
            for name, c in controls.items()]
    blocks: list = [Subheading("Why referral helps or not"), Paragraph([
        f"The pipeline refers the {at:.0%} of images whose calls the MC-dropout spread puts "
        "most in doubt (", Text("decision flip", bold=True), ": per finding, the chance that a "
        "pass lands on the other side of the operating threshold, taking the spread as normal; "
        "summed over findings). Beside it, from the same predictions: the same rule with each "
        "finding's mean spread over the test images instead of the image's own (",
        Text("margin only", bold=True), ": the distance to the threshold, no per-image "
        "uncertainty); ranking by the max MC std over findings (the spread alone); referring "
        "the images with the highest predicted probability (no uncertainty used); and a random "
        "referral (mean gain of 200 draws). ", Text("AUC referred / kept", bold=True),
        ": macro AUC among the images the decision flip refers and among those kept; a "
        "referral that picks the cases the model gets wrong has the lower AUC among the "
        "referred. ", Text("Spearman", bold=True), ": rank correlation of each image's max MC "
        "std with its max probability."]),
        Table(["Model", "Gain, decision flip", "Gain, margin only", "Gain, max MC std",
               "Gain, most probable referred", "Gain, random", "AUC referred / kept",
               "Spearman max std vs probability", "Abnormal among referred (all images)",
               "Test positives referred"], rows)]
    blocks.append(Paragraph(_referral_reading(controls, at)))
    return blocks


def _referral_reading(controls: Mapping[str, Mapping], at: float) -> list:
    """What the controls say, sentence by sentence, from the numbers only."""
    parts: list = []
    rhos = [_num(c.get("std_probability_spearman")) for c in controls.values()]
    rhos = [rho for rho in rhos if rho is not None]
    std_gains = [(display_name(n), _num(c.get("gain_std"))) for n, c in controls.items()]
    std_gains = [(n, g) for n, g in std_gains if g is not None]
    if rhos and min(rhos) >= 0.7:
        parts.append(
            "The max MC std ranks images much as the predicted probability does "
            f"(Spearman {_span(rhos, '.2f')}): dropout at the head spreads a finding's "
            "probability most where the probability is high, so ranking by it refers mostly "
            "abnormal images the model scores high"
            + (" (gains " + _join([f"{n} {_signed_gain(g)}" for n, g in std_gains]) + ")"
               if std_gains else "")
            + "; the decision flip asks instead whether the spread reaches the threshold. ")
    helped, hurt = [], []
    for name, c in controls.items():
        gain = _num(c.get("gain_flip"))
        referred, kept = _num(c.get("auc_referred")), _num(c.get("auc_kept"))
        if gain is None or referred is None or kept is None:
            continue
        (helped if gain > 0 else hurt).append((display_name(name), gain, referred, kept))
    if helped:
        parts.append("Referral by decision flip raises the AUC of the images kept for "
                     + _join([f"{n} ({_signed_gain(g)}; AUC {r:.3f} among the referred against "
                              f"{k:.3f} among the kept)" for n, g, r, k in helped])
                     + ("" if all(r < k for _, _, r, k in helped) else
                        "; where the referred AUC is not the lower one, the gain comes from "
                        "which positives are removed, not from the model's mistakes")
                     + ". ")
    if hurt:
        worse = [(n, g, r, k) for n, g, r, k in hurt if r >= k]
        parts.append("It lowers it for " + _join([f"{n} ({_signed_gain(g)})" for n, g, _, _ in hurt])
                     + ". ")
        if worse:
            parts.append(
                _join([f"{n} ({r:.3f} among the referred against {k:.3f} among the kept)"
                       for n, _, r, k in worse])
                + (" ranks" if len(worse) == 1 else " rank")
                + " the images referred no worse than those kept: the spread does not single "
                "out the cases the model gets wrong. ")
    margins = [(display_name(n), _num(c.get("gain_flip")), _num(c.get("gain_flip_mean_spread")))
               for n, c in controls.items()]
    margins = [(n, f, m) for n, f, m in margins if f is not None and m is not None]
    if margins:
        more = [f"{n} ({_signed_gain(f - m)})" for n, f, m in margins if f - m >= 0.0005]
        less = [f"{n} ({_signed_gain(f - m)})" for n, f, m in margins if f - m <= -0.0005]
        said = ([f"adds to the distance from the threshold for {_join(more)}"] if more else []) \
            + ([f"takes from it for {_join(less)}"] if less else [])
        parts.append(
            "With each finding's mean spread in place of the image's own, the gains are "
            + _join([f"{n} {_signed_gain(m)}" for n, _, m in margins]) + ": the per-image spread "
            + (" and ".join(said) if said else "changes them by less than 0.0005")
            + f" (at {at:.0%} referred, one test split: differences of a few thousandths are "
            "within what another training run moves). ")
    return parts or ["No model has the numbers for a reading."]


def _span(values: list[float], spec: str) -> str:
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low} to {high}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


COARSE_GRID = 3  # an explained map this small (per side) gets a note under the table


def _coarse_map_note(results: Mapping[str, Mapping]) -> str | None:
    """One note for the models whose explained map has at most COARSE_GRID units per side."""
    coarse = []
    for name, result in results.items():
        grid = _get(result, "grid")
        if not isinstance(grid, list | tuple) or len(grid) != 2 or max(grid) > COARSE_GRID:
            continue
        groups = [group for group in _get(result, "unit_centres") or []
                  if isinstance(group, list | tuple) and group]
        where = " | ".join(", ".join(f"{c:g}" for c in group[0]) for group in groups)
        placement = _get(result, "placement")
        coarse.append(f"{display_name(name)} {grid[0]} x {grid[1]}"
                      + (f" ({placement}: {where} px)" if placement and where else ""))
    if not coarse:
        return None
    return ("Coarse maps at this input size: " + "; ".join(coarse) + ". A heatmap then peaks "
            "at one of a few points, and the pointing game asks which unit wins. At so small an "
            "input every unit's receptive field covers the whole image, so the score depends on "
            "where the units are placed: a shift of a pixel or two changes it (docs/DESIGN.md, "
            "Grad-CAM). Read these scores as which region wins, not as lesion outlines.")


def _box_file_counts(context) -> str:
    """"N boxes on M images, K findings", from the localize results (the data's own counts)."""
    for name in _models(context):
        result = _get(context, "models", name, "localize")
        if isinstance(result, Mapping) and result.get("boxes_in_file") is not None:
            findings = result.get("findings_with_boxes_in_file") or []
            return (f"{_int(result['boxes_in_file'])} boxes on "
                    f"{_int(result.get('images_with_boxes_in_file'))} images, "
                    f"{len(findings)} finding{'s' if len(findings) != 1 else ''}")
    return "counts not recorded"


def _localization(context) -> list:
    source = _get(context, "data", "source")
    counts = _box_file_counts(context)
    truth = (f"the phantom generator's box file, which knows every planted lesion ({counts})"
             if source == "phantoms" else
             f"NIH's BBox_List_2017.csv, boxes drawn by radiologists ({counts})"
             if source == "nih" else f"the data's box file ({counts})")
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
    blocks += _absent_notes(models, results, "localization results",
                            "metrics/localize/NAME.json")
    if not results:
        return blocks
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
    footnotes: list = ([["Bold: the best pointing-game score in each row, when it is above "
                         "chance."]] if compare else [])
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
        if flat and n and flat / n > 0.1:
            blocks.append(Note([
                f"{display_name(name)}: {_int(flat)} of {_int(n)} heatmaps are flat: nothing in "
                "the image speaks for the boxed finding (every position's Grad-CAM sum is <= 0), "
                "so its pointing score shows missing positive evidence, not where it looks."]))
    note = _coarse_map_note({name: results[name] for name in shown})
    if note:
        blocks.append(Note([note]))

    detail = []
    for name in shown:
        result = results[name]
        flat, n = _get(result, "overall", "flat"), _get(result, "overall", "n")
        per_heatmap = _num(result.get("seconds_per_heatmap"))
        detail.append([display_name(name), str(result.get("layer") or MISSING),
                       _int(result.get("image_size")),
                       f"{_int(result.get('images_scored'))} of "
                       f"{_int(result.get('test_images_with_boxes'))}",
                       f"{_int(flat)} of {_int(n)}" + (f" ({_percent(_num(flat) / _num(n))})"
                                                       if _num(n) else ""),
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
    floor = chances[0] if chances else 0.0
    pointing_cells = (_bold_best(pointing, floor=floor) if compare
                      else [Cell(text) for _, text in pointing])
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


def _model_figures(context, key: str, what: str) -> list:
    """One figure per model in a grid; a model without the figure gets a note there."""
    items = [Figure(_get(context, "models", name, "figures", key),
                    f"{display_name(name)}: {what}") for name in _models(context)]
    return [Figures(items)] if items else []


# ---------------------------------------------------------------------------------------------
# Reading the context
