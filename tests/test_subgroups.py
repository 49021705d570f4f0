"""The subgroup audit (cxr.evaluation.subgroups), its report section and figure, and the model
card (cxr.report.model_card): every test name holds `subgroup`, so `pytest -k subgroup` runs
them all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxr.evaluation import evaluate
from cxr.evaluation.subgroups import (
    age_band_names,
    age_bands,
    subgroup_audit,
    subgroup_columns,
    subgroup_log_metrics,
)
from cxr.labels import LABELS
from cxr.report import build
from cxr.report.model_card import card_settings, model_card_markdown
from cxr.report.subgroups import subgroup_figure

REPO = Path(__file__).resolve().parents[1]
EDGES = [0, 20, 40, 60, 80]


def _cohort(n_images=1100, n_patients=500, seed=0, planted=0.0, ap_images=None):
    """A test split and MC means: female patients' positives score ``planted`` lower."""
    rng = np.random.default_rng(seed)
    patient = np.sort(rng.integers(0, n_patients, n_images))
    sex = np.where(rng.random(n_patients) < 0.55, "M", "F")[patient]
    age = np.clip(rng.normal(50, 18, n_patients), 1, 95).round().astype(int)[patient]
    view = np.where(rng.random(n_images) < 0.4, "AP", "PA")
    if ap_images is not None:
        view[:] = "PA"
        view[:ap_images] = "AP"
    y = (rng.random((n_images, len(LABELS))) < 0.1).astype(int)
    score = 0.35 * y + 0.65 * rng.random(y.shape)
    score = np.where((sex == "F")[:, None] & (y == 1), score - planted, score).clip(0, 1)
    table = pd.DataFrame({"Patient ID": patient, "Patient Gender": sex, "Patient Age": age,
                          "View Position": view})
    return table, y, score


def _audit(table, y, score, thresholds=0.5, n_boot=300, **kwargs):
    settings = {"min_images": 30, "min_positives": 5, **kwargs}
    return subgroup_audit(y, score, table["Patient ID"].to_numpy(),
                          subgroup_columns(table, EDGES), np.full(len(LABELS), thresholds),
                          LABELS, n_boot=n_boot, seed=1, age_edges=EDGES, **settings)


def test_subgroup_audit_finds_a_planted_gap_with_a_ci_that_excludes_zero():
    table, y, score = _cohort(planted=0.2)
    sex = _audit(table, y, score, thresholds=0.7)["axes"]["sex"]
    auc, missed = sex["gaps"]["macro_auc"], sex["gaps"]["underdiagnosis"]
    # The group put at a disadvantage is named: lower AUC, more underdiagnosis, for F.
    assert auc["group"] == "F" and auc["difference"] < -0.05
    assert auc["ci_high"] < 0 and auc["ci_excludes_zero"] is True
    assert missed["group"] == "F" and missed["difference"] > 0.1
    assert missed["ci_low"] > 0 and missed["ci_excludes_zero"] is True
    groups = sex["groups"]
    assert groups["F"]["macro_auc"] < groups["M"]["macro_auc"]
    assert auc["difference"] == pytest.approx(groups["F"]["macro_auc"] - groups["M"]["macro_auc"],
                                              abs=2e-4)
    # TPR at the threshold follows the planted effect too
    assert np.mean(list(groups["F"]["tpr"].values())) < np.mean(list(groups["M"]["tpr"].values()))


def test_subgroup_audit_without_a_planted_gap_has_cis_that_cover_zero():
    table, y, score = _cohort(planted=0.0)
    audit = _audit(table, y, score)
    for axis in ("sex", "view", "age"):
        for metric, gap in audit["axes"][axis]["gaps"].items():
            assert gap is not None, (axis, metric)
            assert gap["ci_low"] <= 0 <= gap["ci_high"], (axis, metric, gap)
            assert gap["ci_excludes_zero"] is False


def test_subgroup_small_groups_are_reported_as_too_small_never_as_a_number():
    table, y, score = _cohort(ap_images=12)
    audit = _audit(table, y, score)
    view = audit["axes"]["view"]
    assert view["groups"]["AP"] == {"status": "too_small", "images": 12,
                                    "patients": int(table["Patient ID"][:12].nunique()),
                                    "abnormal_images": int(y[:12].any(axis=1).sum())}
    # the rest of AP is PA; PA is reported, but no gap is measured against a group this small
    assert view["groups"]["PA"]["status"] == "ok"
    assert view["gaps"] == {"macro_auc": None, "underdiagnosis": None}
    # an age band with no image at all is still listed, as too small
    assert audit["axes"]["age"]["groups"]["0-20"]["status"] in ("ok", "too_small")
    # enough images but too few with a finding: too small as well
    healthy = y.copy()
    healthy[table["Patient Gender"].to_numpy() == "F"] = 0
    healthy[np.flatnonzero(table["Patient Gender"].to_numpy() == "F")[:3], 0] = 1
    assert _audit(table, healthy, score)["axes"]["sex"]["groups"]["F"]["status"] == "too_small"
    # a finding with fewer positives than min_positives in a group has no TPR
    audit = _audit(table, y, score, min_positives=60)
    entry = audit["axes"]["sex"]["groups"]["M"]
    positives = y[table["Patient Gender"].to_numpy() == "M"].sum(axis=0)
    for label, count in zip(LABELS, positives, strict=True):
        assert (entry["tpr"][label] is None) == (count < 60), label


def test_subgroup_audit_metrics_keys_and_mlflow_names():
    table, y, score = _cohort(planted=0.1)
    audit = _audit(table, y, score, n_boot=50)
    assert json.loads(json.dumps(audit)) == audit  # JSON-ready as it is
    assert set(audit) == {"settings", "axes"}
    assert list(audit["axes"]) == ["sex", "view", "age"]
    assert list(audit["axes"]["sex"]["groups"]) == ["M", "F"]
    assert list(audit["axes"]["view"]["groups"]) == ["PA", "AP"]
    assert list(audit["axes"]["age"]["groups"]) == ["0-20", "20-40", "40-60", "60-80", "80+"]
    entry = audit["axes"]["sex"]["groups"]["M"]
    assert set(entry) == {"status", "images", "patients", "abnormal_images", "macro_auc",
                          "macro_auc_ci_low", "macro_auc_ci_high", "underdiagnosis",
                          "underdiagnosis_ci_low", "underdiagnosis_ci_high", "tpr", "fpr"}
    assert set(entry["tpr"]) == set(LABELS) == set(entry["fpr"])
    assert entry["macro_auc_ci_low"] <= entry["macro_auc"] <= entry["macro_auc_ci_high"]
    assert round(entry["macro_auc"], 4) == entry["macro_auc"]  # rounded: a short file
    assert set(audit["axes"]["sex"]["gaps"]["macro_auc"]) == {
        "group", "difference", "ci_low", "ci_high", "rest", "ci_excludes_zero", "n_valid"}
    logged = subgroup_log_metrics(audit)
    assert "subgroup_sex_F_macro_auc" in logged and "subgroup_sex_largest_gap_macro_auc" in logged
    assert all(re.fullmatch(r"[A-Za-z0-9_\-. /]+", key) for key in logged), logged
    too_small = [f"subgroup_{axis}_{group.replace('+', 'plus')}"
                 for axis, block in audit["axes"].items()
                 for group, e in block["groups"].items() if e["status"] == "too_small"]
    assert not any(key.startswith(prefix) for key in logged for prefix in too_small)


def test_subgroup_age_bands_and_their_errors():
    assert age_band_names(EDGES) == ["0-20", "20-40", "40-60", "60-80", "80+"]
    assert list(age_bands([0, 19, 20, 59, 80, 99], EDGES)) == [
        "0-20", "0-20", "20-40", "40-60", "80+", "80+"]
    assert list(age_bands([5, 30], [10, 40])) == [None, "10-40"]
    with pytest.raises(ValueError, match="age band edges"):
        age_bands([30], [0, 40, 20])
    with pytest.raises(ValueError, match="Patient Gender"):
        subgroup_columns(pd.DataFrame({"Patient Age": [3]}), EDGES)
    table, y, score = _cohort(n_images=200, n_patients=80)
    with pytest.raises(ValueError, match="min_images"):
        _audit(table, y, score, min_images=0)


def _run_metrics(planted=0.15):
    """An eval result with its audit, as the evaluate stage writes it, and train/split files."""
    table, y, score = _cohort(planted=planted)
    rng = np.random.default_rng(5)
    patients = table["Patient ID"].to_numpy()
    result = evaluate(y, score, rng.random(y.shape) * 0.1, patients, LABELS, val_true=y[:300],
                      val_score=score[:300], n_boot=100, seed=0)
    result["referral"] = {"gain_at_20": 0.0123}
    result["mc_dropout"] = {"passes": 25, "threshold": 0.1, "referred_images_fraction": 0.21,
                            "mean_std": 0.034}
    result["subgroups"] = _audit(table, y, score, n_boot=100,
                                 thresholds=np.median(score))
    train = {"epochs": {"head": 0, "finetune": 7}, "train_seconds": 321.0, "train_images": 3880,
             "parameters": 7_000_000, "val_macro_auc": 0.7777}
    split = {"images": 5500, "patients": 2000,
             "splits": {"train": {"images": 3880, "patients": 1400, "image_fraction": 0.705},
                        "val": {"images": 520, "patients": 200, "image_fraction": 0.095},
                        "test": {"images": 1100, "patients": 400, "image_fraction": 0.2}}}
    flat = {"seed": 42, "data.source": "phantoms", "sample.patient_fraction": 0.5,
            "split.method": "iterative", "split.by_patient": True, "pipeline.image_size": 64,
            "train.weights": "none", "loss.name": "focal", "models.densenet121.head_epochs": 0,
            "models.densenet121.finetune_epochs": 14, "models.densenet121.schedule": "cosine",
            "models.densenet121.finetune_learning_rate": 0.001}
    return result, train, split, flat


def test_subgroup_model_card_numbers_equal_the_metrics():
    result, train, split, flat = _run_metrics()
    card = model_card_markdown("densenet121", evaluation=result, train=train, split=split,
                               settings=card_settings(flat, "densenet121"))
    assert card.startswith("# Model card: DenseNet121")
    for heading in ("Intended use", "Data", "Training", "Evaluation (test split)", "Subgroups",
                    "Uncertainty", "Known limits"):
        assert f"\n## {heading}\n" in card
    assert "Not a diagnostic device" in card
    macro = re.search(r"Macro AUC \*\*([0-9.]+)\*\* \(95% CI ([0-9.]+)–([0-9.]+)", card)
    assert macro, card
    assert [float(v) for v in macro.groups()] == [
        round(result[key], 3) for key in ("macro_auc", "macro_auc_ci_low", "macro_auc_ci_high")]
    ece = re.search(r"ECE ([0-9.]+), Brier ([0-9]\.[0-9]+)", card)
    assert [float(v) for v in ece.groups()] == [round(result["calibration"][k], 3)
                                                 for k in ("ece", "brier")]
    assert f"{result['auc']['Effusion']:.3f} (" in card
    assert "validation macro AUC 0.778" in card and "finetune 7" in card
    assert "| train | 3,880 | 1,400 | 70.5% |" in card
    # the subgroup table: every reported group's AUC and underdiagnosis, as in the metrics
    for axis, block in result["subgroups"]["axes"].items():
        for group, entry in block["groups"].items():
            if entry["status"] == "ok":
                assert f"{entry['macro_auc']:.3f}" in card, (axis, group)
                assert f"{entry['underdiagnosis'] * 100:.1f}%" in card, (axis, group)
            else:
                assert f"too small ({entry['images']} images)" in card
    gap = result["subgroups"]["axes"]["sex"]["gaps"]["macro_auc"]
    assert gap["ci_excludes_zero"] and f"sex F against the rest: macro AUC {gap['difference']:+.3f}" \
        in card
    assert "plants no subgroup effect" in card  # data.source phantoms


def _context(tmp_path, source):
    result, train, split, flat = _run_metrics()
    flat = {**flat, "data.source": source}
    audits = {"densenet121": result["subgroups"], "fusion": result["subgroups"]}
    figure = subgroup_figure(audits, tmp_path / "subgroups.png")
    return {"data": {"source": source, "split": split},
            "models": {name: {"eval": result, "train": train} for name in audits},
            "figures": {"subgroups": str(figure)}, "provenance": {"params": flat}}


@pytest.mark.parametrize("source", ["phantoms", "nih"])
def test_subgroup_report_section_names_gaps_beyond_their_ci_and_small_groups(tmp_path, source):
    markdown, page = build.build_report(_context(tmp_path, source))
    start = markdown.index('<a id="subgroups"></a>')
    section = markdown[start:markdown.index('<a id="', start + 1)]
    assert "Beyond their 95% CI" in section and "sex F against the rest" in section
    assert "Too small to say anything" in section or "Every group is large enough" in section
    assert ("plants no subgroup effect" in section) == (source == "phantoms")
    assert "![Macro AUC and underdiagnosis per group" in section
    assert '<section id="subgroups">' in page and '<section id="model-cards">' in page
    cards = markdown[markdown.index('<a id="model-cards"></a>'):]
    assert "Model card: DenseNet121" in cards and "Model card: Fusion" in cards
    assert "could not be built" not in markdown


def test_subgroup_figure_draws_every_model_and_marks_small_groups(tmp_path):
    table, y, score = _cohort(ap_images=12)
    audit = _audit(table, y, score, n_boot=50)
    path = subgroup_figure({"simple_cnn": audit, "fusion": audit}, tmp_path / "s.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="non-empty"):
        subgroup_figure({}, tmp_path / "t.png")


def test_subgroup_params_block_is_in_both_configs_and_checked():
    from cxr.params import ParamsError, params_from_dict

    for name in ("params.yaml", "configs/nih-paper.yaml"):
        block = yaml.safe_load((REPO / name).read_text())["evaluate"]["subgroups"]
        assert block == {"age_edges": EDGES, "min_images": 30, "min_positives": 5}, name
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params_from_dict(raw).evaluate.subgroups.age_edges == EDGES
    for change, message in (({"age_edges": [0, 40, 20]}, "evaluate.subgroups.age_edges = "),
                            ({"age_edges": [0, "x"]}, r"evaluate.subgroups.age_edges\[1\]"),
                            ({"min_images": 0}, "evaluate.subgroups.min_images = 0"),
                            ({"min_positives": 31}, "evaluate.subgroups.min_positives = 31")):
        broken = yaml.safe_load((REPO / "params.yaml").read_text())
        broken["evaluate"]["subgroups"].update(change)
        with pytest.raises(ParamsError, match=message):
            params_from_dict(broken)


def test_subgroup_model_card_is_logged_into_the_finished_train_run(tmp_path):
    """The evaluate stage logs the card into the train run, where the MLflow model lives."""
    from mlflow.tracking import MlflowClient

    from cxr import tracking

    uri = tracking.resolve_tracking_uri("", tmp_path)
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("# Model card\n")
    with tracking.start_run(uri, "exp", "train@x", {}, {}, tmp_path / "artifacts") as train:
        pass
    with tracking.start_run(uri, "exp", "evaluate@x", {}, {}, tmp_path / "artifacts") as run:
        run.log_artifact_to_run(train.run_id, card, "model_card")
        run.log_artifact_to_run(None, card, "model_card")  # no train run recorded: nothing
    logged = [item.path for item in MlflowClient(uri).list_artifacts(train.run_id, "model_card")]
    assert logged == ["model_card/MODEL_CARD.md"]
    assert MlflowClient(uri).list_artifacts(run.run_id) == []
