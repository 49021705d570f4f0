"""Section builders for the headline results: summary, test AUC table, data, model comparison."""

from __future__ import annotations

from collections.abc import Mapping

from cxr.labels import LABELS
from cxr.report.comparability import unmet
from cxr.report.document import (
    MACRO_ROW,
    MISSING,
    PUBLISHED_MARK,
    PUBLISHED_STUDY,
    Cell,
    Figure,
    Note,
    Paragraph,
    Table,
    Text,
    display_name,
    published_label,
)
from cxr.report.formatting import (
    _auc,
    _auc_with_ci,
    _ci_text,
    _comparison,
    _comparison_p,
    _evaluated,
    _get,
    _int,
    _models,
    _num,
    _p_text,
    _p_value_phrase,
    _percent,
    _sample_size,
    _signed,
)


def _summary(context) -> list:
    evaluated = _evaluated(context)
    blocks: list = []
    if not evaluated:
        blocks.append(Note(["No model has a test evaluation yet, so there is nothing to rank."]))
        blocks.append(Paragraph([_source_sentence(context)]))
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
    parts.append(" " + _source_sentence(context))
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


def _source_sentence(context) -> str:
    source = _get(context, "data", "source")
    if source == "phantoms":
        return ("The data are synthetic phantoms in the NIH layout with planted findings: the "
                "numbers show that the pipeline works end to end, not how well a model reads "
                "real chest X-rays, and they are not comparable with the published study.")
    if source == "nih":
        comparability = _get(context, "data", "comparability")
        if isinstance(comparability, Mapping) and comparability.get("comparable"):
            return ("The data are the real NIH ChestX-ray14 images at the study's sample size, "
                    "image size, weights and epochs, split by patient: the numbers can be set "
                    "beside the published study's, whose image-level split let test patients "
                    "also train (it flatters the study).")
        missed = unmet(comparability)
        return ("The data are real NIH ChestX-ray14 images, but this run is not the study's "
                "setting" + (": " + "; ".join(missed) if missed else " (not recorded)")
                + ". Its numbers show the pipeline on real films; they are not a reproduction "
                "and are not to be set beside the published study's.")
    return f"Data source: {source if source else 'not recorded'}."


def _upsampling_note(context) -> list:
    prepared = _get(context, "data", "prepare")
    if not isinstance(prepared, Mapping) or not prepared.get("upsampled"):
        return []
    return [Note([f"Prepare upsampled {_int(prepared['upsampled'])} of "
                  f"{_int(prepared.get('images'))} image files (smallest side "
                  f"{_int(prepared.get('source_side_min'))} px) to "
                  f"{_int(prepared.get('image_size'))} px: they hold no detail finer than "
                  f"their own size, so the models saw less than the input size suggests."])]


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
    models = _models(context)
    evaluated = _evaluated(context)
    comparable = bool(_get(context, "data", "comparability", "comparable"))
    label = published_label(_get(context, "data", "source"), comparable)
    published = list(PUBLISHED_STUDY["models"])
    blocks: list = []
    for name in models:
        if name not in evaluated:
            blocks.append(Note([f"No test evaluation for {display_name(name)} "
                                f"(metrics/eval/{name}.json missing or without macro_auc); "
                                f"its column reads {MISSING}."]))
    if not models:
        blocks.append(Note(["No models in the report context."]))

    baseline = _get(context, "baseline")
    baseline = baseline if isinstance(baseline, Mapping) else None
    baseline_columns = [BASELINE_NAME] if baseline else []
    columns = (["Finding"] + [display_name(name) for name in models] + baseline_columns
               + [f"{display_name(name)} {PUBLISHED_MARK}" for name in published])
    rows = []
    for finding in LABELS:
        ours = [_class_auc_cell(evaluated.get(name), finding) for name in models]
        linear = [Cell(_auc(_num(_get(baseline, "auc", finding))))] if baseline else []
        reference = [_published_cell(name, finding) for name in published]
        rows.append([Cell(finding)] + _bold_best(ours, floor=0.5) + linear + reference)
    macro = [(_num(_get(evaluated.get(name), "macro_auc")),
              _auc_with_ci(evaluated.get(name))) for name in models]
    linear = [Cell(_auc_with_ci({"macro_auc": _get(baseline, "macro_auc"),
                                 "macro_auc_ci_low": _get(baseline, "macro_auc_ci_low"),
                                 "macro_auc_ci_high": _get(baseline, "macro_auc_ci_high")}))
              ] if baseline else []
    reference = [Cell(_auc(_get(PUBLISHED_STUDY, "macro_auc", name), digits=4))
                 for name in published]
    rows.append([Cell(MACRO_ROW, bold=True)] + _bold_best(macro, floor=0.5) + linear + reference)

    footnotes: list = [
        ["Bold: the best of this run's models in each row (baseline and published columns "
         "excluded), when it is above chance (0.5)."],
        ["n/a: the finding has no positives (or no negatives) in the test split, so it has no "
         "ROC-AUC; it is left out of the macro average."],
        [f"{PUBLISHED_MARK} {label}: test AUCs as published, per finding to two decimals "
         "and macro to four."],
    ]
    if baseline:
        settings = _get(baseline, "settings") or {}
        footnotes.insert(1, [f"{BASELINE_NAME}: one logistic regression per finding on "
                             f"{_int(settings.get('thumbnail'))}x{_int(settings.get('thumbnail'))} "
                             "thumbnails of the training split, scored on the same test split: "
                             "what pixel intensities at a coarse scale already tell. A deep "
                             "model should beat it by more than its CI."])
    if any(not PUBLISHED_STUDY["auc"].get(name) for name in published):
        footnotes.append([f"{PUBLISHED_MARK} Per-class figures from the study's Table 2 are to "
                          "be filled in ", Text("PUBLISHED_STUDY", code=True), " (",
                          Text("src/cxr/report/document.py", code=True), f"); until then they read "
                          f"{MISSING}."])
    n_boot = {_get(e, "n_boot") for e in evaluated.values()} - {None}
    if n_boot:
        footnotes.append([f"95% CI of the macro AUC: {', '.join(map(str, sorted(n_boot)))} "
                          "bootstrap resamples of the test set."])
    blocks.append(Table(
        columns, rows,
        caption=[Text(f"{PUBLISHED_MARK} = {label}", bold=True)],
        footnotes=footnotes,
        groups=[("", 1), ("This run", len(models) + len(baseline_columns)),
                (f"{PUBLISHED_MARK} {label}", len(published))]
        if models else [("", 1), (f"{PUBLISHED_MARK} {label}", len(published))],
    ))
    if _get(context, "figures", "auc_comparison") is not None or evaluated:
        blocks.append(Figure(_get(context, "figures", "auc_comparison"),
                             "Test ROC-AUC per finding and model"))
    return blocks


BASELINE_NAME = "Linear baseline"


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
    # As published: per finding to two decimals (the macro row has four); "0.6700" would
    # claim a precision the study did not report.
    value = _num(_get(PUBLISHED_STUDY, "auc", model, finding))
    return Cell(_auc(value, digits=2) if value is not None else MISSING)


def _bold_best(values: list[tuple[float | None, str]], floor: float | None = None) -> list[Cell]:
    """Cells with the best value bold, unless that best is not above `floor` (chance level):
    a 0.000 pointing game or an AUC of 0.5 is nobody's "best"."""
    numbers = [value for value, _ in values if value is not None]
    best = max(numbers) if numbers else None
    if best is not None and floor is not None and best <= floor:
        best = None
    return [Cell(text, bold=best is not None and value is not None and value == best)
            for value, text in values]


def _data(context) -> list:
    split = _get(context, "data", "split")
    blocks: list = [Paragraph([_source_sentence(context)]), *_upsampling_note(context)]
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
