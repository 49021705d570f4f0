"""Model cards (Mitchell et al., "Model Cards for Model Reporting", 2019), one per trained model.

A card says what a model is for and what not, what data and schedule made it, how it did on the
test split (discrimination with its interval, calibration, referral, subgroups), how sure it is
and where it is known to fall short. Every number on it comes from the run's own files (the
eval and train metrics, the split summary and the flat params), given as arguments: nothing
here reads a file, and no number is written by hand.

:func:`model_card_blocks` builds the card in the report's document model, so the same blocks
become ``models/MODEL/MODEL_CARD.md`` (:func:`model_card_markdown`, written by the evaluate
stage) and the report's model-card section (:func:`model_cards_section`).
"""

from __future__ import annotations

from collections.abc import Mapping

from cxr.labels import LABELS
from cxr.report.document import (
    MISSING,
    Bullets,
    Note,
    Paragraph,
    Subheading,
    Table,
    Text,
    display_name,
)
from cxr.report.formatting import _auc, _duration, _fixed, _get, _int, _models, _num, _percent
from cxr.report.markdown import _md, _md_block
from cxr.report.subgroups import (
    gap_sentences,
    phantom_caveat,
    subgroup_table,
    too_small_groups,
)

CARD_FILE = "MODEL_CARD.md"

# The flat params a card reads (cxr.params.flatten keys); MODEL stands for the model's name.
CARD_PARAMS = (
    "seed", "data.source", "sample.patient_fraction", "split.method", "split.by_patient",
    "pipeline.image_size", "train.weights", "loss.name", "evaluate.threshold_method",
    "evaluate.n_boot", "mc_dropout.passes", "mc_dropout.threshold", "mc_dropout.layers",
    "models.MODEL.head_epochs", "models.MODEL.head_learning_rate",
    "models.MODEL.finetune_epochs", "models.MODEL.finetune_learning_rate",
    "models.MODEL.schedule", "models.MODEL.weight_decay",
)


def card_settings(flat_params: Mapping, name: str) -> dict:
    """The settings a card shows, from the run's flat params (``cxr.params.flatten``); a key
    the params lack is left out (the card then shows "—")."""
    settings = {}
    for key in CARD_PARAMS:
        source_key = key.replace("MODEL", name)
        if source_key in flat_params:
            settings[key.replace("models.MODEL.", "model.")] = flat_params[source_key]
    return settings


def model_card_markdown(name: str, *, evaluation: Mapping | None, train: Mapping | None,
                        split: Mapping | None, settings: Mapping) -> str:
    """The card as a standalone Markdown file (``MODEL_CARD.md``)."""
    lines = [f"# Model card: {_md(display_name(name))} (`{name}`)", ""]
    for block in model_card_blocks(name, evaluation=evaluation, train=train, split=split,
                                   settings=settings):
        if isinstance(block, Subheading):
            lines += [f"## {_md(block.text)}", ""]
        else:
            lines += _md_block(block, None) + [""]
    return "\n".join(lines).rstrip() + "\n"


def model_cards_section(context) -> list:
    """The report section: each model's card (its subgroup table is in the subgroup section)."""
    names = _models(context)
    if not names:
        return [Note(["No models in the report context."])]
    flat = _get(context, "provenance", "params") or {}
    blocks: list = [Paragraph([
        "One card per model (Mitchell et al. 2019), built from this run's metrics; the evaluate "
        "stage writes the same card to ", Text("models/MODEL/MODEL_CARD.md", code=True),
        " and logs it with the model in MLflow."])]
    for name in names:
        blocks.append(Subheading(f"Model card: {display_name(name)}"))
        blocks += model_card_blocks(
            name, evaluation=_get(context, "models", name, "eval"),
            train=_get(context, "models", name, "train"), split=_get(context, "data", "split"),
            settings=card_settings(flat, name), subgroup_details=False, headings=False)
    return blocks


def model_card_blocks(name: str, *, evaluation: Mapping | None, train: Mapping | None,
                      split: Mapping | None, settings: Mapping, subgroup_details: bool = True,
                      headings: bool = True) -> list:
    """The card's parts in order. ``headings`` False gives each part as a bold lead-in instead
    of a subheading (for the report, where the card sits under a subheading of its own)."""
    source = settings.get("data.source")
    parts = [
        ("Intended use", _intended_use(source)),
        ("Data", _data(source, split, settings)),
        ("Training", _training(train, settings)),
        ("Evaluation (test split)", _evaluation(evaluation, settings)),
        ("Subgroups", _subgroups(evaluation, source, subgroup_details)),
        ("Uncertainty", _uncertainty(evaluation)),
        ("Known limits", _limits(source, settings)),
    ]
    blocks: list = []
    for title, content in parts:
        if headings:
            blocks += [Subheading(title), *content]
        else:
            first, *rest = content
            lead = Paragraph([Text(f"{title}.", bold=True), " ", *_inline(first)])
            blocks += [lead, *rest]
    return blocks


def _inline(block) -> list:
    return list(block.parts) if isinstance(block, Paragraph | Note) else [str(block)]


# ---------------------------------------------------------------------------------------------
# The parts


def _intended_use(source) -> list:
    return [
        Paragraph(["Research and teaching: a multi-label classifier of the 14 ChestX-ray14 "
                   "findings on frontal chest X-rays, compared with three other architectures "
                   "in one reproducible pipeline. It outputs a probability per finding, a call "
                   "at each finding's operating threshold and, from Monte-Carlo dropout, a "
                   "flag that refers uncertain images to a reader."]),
        Bullets([["Not a diagnostic device: not cleared or validated for clinical use; no "
                  "diagnosis, triage or treatment decision may rest on it."],
                 ["Not for lateral views, other findings than the 14, other hospitals' or "
                  "scanners' images, or patient groups the test split does not cover (see "
                  "Subgroups)."],
                 ["Not a measure of real-world performance"
                  + (": trained and tested on synthetic phantoms." if source == "phantoms"
                     else ": one hospital's archive, labels mined from reports.")]]),
    ]


def _data(source, split, settings) -> list:
    what = {"phantoms": "synthetic phantom chest films from the pipeline's generator (findings "
                        "drawn as planted signs, NIH-like label frequencies and label noise)",
            "nih": "NIH ChestX-ray14 (frontal films, 14 findings text-mined from the reports)"
            }.get(source, str(source or MISSING))
    rows = []
    for part in ("train", "val", "test"):
        entry = _get(split, "splits", part)
        rows.append([part, _int(_get(entry, "images")), _int(_get(entry, "patients")),
                     _percent(_get(entry, "image_fraction"))])
    method = settings.get("split.method")
    by_patient = settings.get("split.by_patient")
    return [
        Paragraph([f"Source: {what}. Sample: {_percent(settings.get('sample.patient_fraction'), 0)} "
                   f"of the patients ({_int(_get(split, 'images'))} images of "
                   f"{_int(_get(split, 'patients'))} patients). Split: "
                   f"{method or MISSING}, "
                   + ("by patient (no patient in two splits)" if by_patient
                      else "by image (patients leak across splits)" if by_patient is False
                      else MISSING)
                   + f"; input {_int(settings.get('pipeline.image_size'))} px."]),
        Table(["Split", "Images", "Patients", "Share of images"], rows),
    ]


def _training(train, settings) -> list:
    epochs = _get(train, "epochs") or {}
    run = ", ".join(f"{phase} {_int(n)}" for phase, n in epochs.items()) or MISSING
    return [Paragraph([
        f"Weights at the start: {settings.get('train.weights', MISSING)}. Schedule: head phase "
        f"{_int(settings.get('model.head_epochs'))} epochs at "
        f"{_lr(settings.get('model.head_learning_rate'))}, fine-tuning "
        f"{_int(settings.get('model.finetune_epochs'))} epochs at "
        f"{_lr(settings.get('model.finetune_learning_rate'))} "
        f"({settings.get('model.schedule', MISSING)} schedule, weight decay "
        f"{settings.get('model.weight_decay', MISSING)}), loss {settings.get('loss.name', MISSING)}, "
        f"seed {settings.get('seed', MISSING)}. Epochs run (early stopping): {run}; "
        f"{_int(_get(train, 'train_images'))} training images, "
        f"{_int(_get(train, 'parameters'))} parameters, "
        f"{_duration(_get(train, 'train_seconds'))}; validation macro AUC "
        f"{_auc(_get(train, 'val_macro_auc'))}."])]


def _evaluation(evaluation, settings) -> list:
    if not isinstance(evaluation, Mapping):
        return [Note(["No evaluation (metrics/eval/MODEL.json) for this model."])]
    calibration = evaluation.get("calibration") or {}
    referral = evaluation.get("referral") or {}
    blocks: list = [Paragraph([
        f"Test split: {_int(evaluation.get('n_images'))} images of "
        f"{_int(evaluation.get('n_patients'))} patients. Macro AUC ",
        Text(_auc(evaluation.get("macro_auc")), bold=True),
        f" (95% CI {_auc(evaluation.get('macro_auc_ci_low'))}–"
        f"{_auc(evaluation.get('macro_auc_ci_high'))}, {_int(evaluation.get('n_boot'))} "
        f"patient-bootstrap resamples); macro AUPRC {_auc(evaluation.get('macro_auprc'))}. "
        f"Calibration: ECE {_fixed(calibration.get('ece'))}, Brier "
        f"{_fixed(calibration.get('brier'))}. Referral: referring the 20% most uncertain "
        f"images changes the macro AUC of those kept by "
        f"{_signed_text(referral.get('gain_at_20'))}. Operating thresholds: "
        f"{evaluation.get('threshold_source') or settings.get('evaluate.threshold_method') or MISSING}."])]
    rows = []
    for label in LABELS:
        ci = _get(evaluation, "auc_ci", label) or {}
        auc = _num(_get(evaluation, "auc", label))
        rows.append([label.replace("_", " "),
                     MISSING if auc is None else
                     f"{auc:.3f} ({_auc(ci.get('low'))}–{_auc(ci.get('high'))})",
                     _fixed(_get(evaluation, "sensitivity", label)),
                     _fixed(_get(evaluation, "specificity", label)),
                     _fixed(_get(evaluation, "threshold", label))])
    blocks.append(Table(["Finding", "AUC (95% CI)", "Sensitivity", "Specificity", "Threshold"],
                        rows))
    return blocks


def _subgroups(evaluation, source, details: bool) -> list:
    audit = _get(evaluation, "subgroups")
    if not isinstance(audit, Mapping) or not isinstance(audit.get("axes"), Mapping):
        return [Note(["No subgroup audit in this model's eval metrics."])]
    audits = {"model": audit}
    beyond, within = gap_sentences(audits, name_models=False)  # a card is about one model
    small = too_small_groups(audits)
    text = ("By sex, view position and age band, largest gap of a group against the rest of "
            "the test split: "
            + ("beyond its 95% CI for " + "; ".join(beyond) + ". " if beyond
               else "none is beyond its 95% CI. ")
            + (f"{len(within)} within {'its' if len(within) == 1 else 'their'} CI. "
               if within else "")
            + ("Too small to say anything: " + "; ".join(small) + "." if small
               else "Every group is large enough to be reported."))
    blocks: list = [Paragraph([text])]
    caveat = phantom_caveat(source)
    if caveat:
        blocks.append(Paragraph([Text("Phantom data.", bold=True), " ", caveat]))
    if details:
        table = subgroup_table(audits)
        # One model: its columns need no model name.
        table.columns = table.columns[:4] + ["Macro AUC (95% CI)", "Underdiagnosis (95% CI)"]
        table.groups = []
        blocks.append(table)
    return blocks


def _uncertainty(evaluation) -> list:
    mc = _get(evaluation, "mc_dropout")
    if not isinstance(mc, Mapping):
        return [Note(["No Monte-Carlo dropout summary in this model's eval metrics."])]
    return [Paragraph([
        f"Monte-Carlo dropout, {_int(mc.get('passes'))} passes per image: mean std of the "
        f"probabilities {_fixed(mc.get('mean_std'))}; a finding whose std exceeds "
        f"{mc.get('threshold', MISSING)} is referred, which flags "
        f"{_percent(mc.get('referred_images_fraction'))} of the test images. The intervals "
        "above cover the sampling of test patients only: one training run, so the spread "
        "between training runs (seed, data order) is not in them."])]


def _limits(source, settings) -> list:
    items = [["Operating thresholds were chosen on the validation split; another site's "
              "prevalence shifts what they mean."],
             ["Every interval comes from one test split and one training run."]]
    if source == "phantoms":
        items.insert(0, [f"Synthetic {_int(settings.get('pipeline.image_size'))} px phantoms: "
                         "planted signs, not disease; numbers here say whether the pipeline "
                         "works, not how a model would do on real films."])
        items.insert(1, ["The phantoms carry label noise on purpose, like NIH's text-mined "
                         "labels, so a perfect model does not reach AUC 1."])
    else:
        items.insert(0, ["Labels were text-mined from radiology reports (NIH ChestX-ray14): some "
                         "are wrong, and test AUCs inherit that noise."])
        items.insert(1, [f"Input downsized to {_int(settings.get('pipeline.image_size'))} px: "
                         "small findings (nodules) lose detail."])
    return [Paragraph(["What this card cannot vouch for:"]), Bullets(items)]


def _lr(value) -> str:
    value = _num(value)
    return MISSING if value is None else f"learning rate {value:g}"


def _signed_text(value) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value:+.3f}"
