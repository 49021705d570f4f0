"""cxr.evaluation: AUCs against sklearn, patient bootstrap, thresholds, calibration, referral."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from cxr.evaluation import (
    DEFAULT_REFERRAL_FRACTIONS,
    bootstrap_auc,
    brier_score,
    calibration_summary,
    choose_thresholds,
    decision_flip_uncertainty,
    evaluate,
    expected_calibration_error,
    fast_auc,
    fast_auc_batched,
    macro_auc,
    macro_auprc,
    paired_bootstrap_macro_auc,
    patient_bootstrap_weights,
    per_class_auc,
    per_class_auprc,
    referral_curve,
    referral_gain,
    reliability_curve,
    sensitivity_specificity,
)
from cxr.labels import LABELS

THREE = ("Atelectasis", "Cardiomegaly", "Hernia")


def scored_labels(n_images, n_labels, seed=0, signal=1.0, prevalence=0.3):
    """0/1 labels and scores that rank positives higher by `signal` (plus noise)."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n_images, n_labels)) < prevalence).astype(np.int8)
    return y, 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(size=y.shape))))


# --- fast AUC against sklearn ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_auc_equals_sklearn_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 1)  # 11 distinct values: many ties
    float_weights = rng.random(300) * 3
    int_weights = rng.integers(0, 4, 300)
    assert fast_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-10)
    for weights in (float_weights, int_weights):
        expected = roc_auc_score(y, scores, sample_weight=weights)
        assert fast_auc(y, scores, weights) == pytest.approx(expected, abs=1e-10)


def test_fast_auc_batched_equals_sklearn_row_by_row():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    scores = np.round(rng.normal(size=150), 1)
    weights = rng.integers(0, 5, (20, 150))
    got = fast_auc_batched(y, scores, weights)
    expected = [roc_auc_score(y, scores, sample_weight=row) for row in weights]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_fast_auc_is_nan_without_positive_or_negative_weight():
    y, scores = np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.4, 0.3])
    assert np.isnan(fast_auc(np.zeros(4, int), scores))
    assert np.isnan(fast_auc(y, scores, weights=[1, 0, 1, 0]))  # positives weigh nothing
    rows = fast_auc_batched(y, scores, [[1, 1, 1, 1], [0, 1, 0, 1]])
    assert rows[0] == 0.75 and np.isnan(rows[1])


# --- per class and macro ------------------------------------------------------------------


def test_class_without_positives_is_none_with_reason_and_left_out_of_macro():
    y, scores = scored_labels(80, 3, seed=4)
    y[:, 2] = 0
    aucs, auprcs = per_class_auc(y, scores, THREE), per_class_auprc(y, scores, THREE)
    assert aucs["Hernia"] == {"auc": None, "positives": 0, "reason": "no positives in split"}
    assert auprcs["Hernia"]["auprc"] is None and auprcs["Hernia"]["reason"]
    assert aucs["Atelectasis"]["auc"] == pytest.approx(roc_auc_score(y[:, 0], scores[:, 0]))
    assert auprcs["Cardiomegaly"]["auprc"] == pytest.approx(
        average_precision_score(y[:, 1], scores[:, 1]))
    assert macro_auc(aucs) == pytest.approx(np.mean([aucs[k]["auc"] for k in THREE[:2]]))
    assert macro_auprc(auprcs) == pytest.approx(np.mean([auprcs[k]["auprc"] for k in THREE[:2]]))


# --- thresholds and operating points ------------------------------------------------------


def test_youden_threshold_hand_case_and_fallback_for_a_class_without_positives():
    # Column 0: negatives 0.1 0.2 0.3 0.4, positives 0.35 0.8 0.9. Youden J = TPR - FPR:
    #   t=0.9: 1/3 - 0 = .33   t=0.8: 2/3 - 0 = .67   t=0.4: 2/3 - 1/4 = .42
    #   t=0.35: 1 - 1/4 = .75 (best)   t=0.3: 1 - 2/4 = .5
    y = np.array([[0, 0], [0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [1, 0]])
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.8, 0.9])[:, None].repeat(2, axis=1)
    thresholds, notes = choose_thresholds(y, scores, return_notes=True)
    assert thresholds.tolist() == [0.35, 0.5]
    assert notes[0] is None and "no positives in validation split" in notes[1]
    operating = sensitivity_specificity(y, scores, thresholds, THREE[:2])
    assert operating["Atelectasis"] == {"threshold": 0.35, "sensitivity": 1.0,
                                        "specificity": 0.75}
    # Column 1 at 0.5: no positives, and every score but 0.8 and 0.9 is below 0.5.
    assert operating["Cardiomegaly"] == {"threshold": 0.5, "sensitivity": None,
                                         "specificity": 5 / 7}


def test_f1_threshold_can_differ_from_youden():
    # Positives 0.9 and 0.2; negatives 0.8 0.75 0.7 and six below 0.2.
    #   Youden: t=0.9 -> 1/2 - 0 = .5; t=0.2 -> 1 - 3/9 = .67 (best)
    #   F1:     t=0.9 -> P 1, R 1/2 -> .67 (best); t=0.2 -> P 2/5, R 1 -> .57
    scores = np.array([0.9, 0.2, 0.8, 0.75, 0.7, 0.1, 0.05, 0.04, 0.03, 0.02, 0.01])[:, None]
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])[:, None]
    assert choose_thresholds(y, scores, "youden").tolist() == [0.2]
    assert choose_thresholds(y, scores, "f1").tolist() == [0.9]


# --- patient bootstrap --------------------------------------------------------------------


def test_patient_bootstrap_weights_are_patient_multiplicities():
    groups = np.array(["p2", "p1", "p2", "p3", "p3"])
    weights = patient_bootstrap_weights(groups, n_boot=50, seed=1)
    assert weights.shape == (50, 5)
    np.testing.assert_array_equal(weights[:, 0], weights[:, 2])  # same patient, same weight
    np.testing.assert_array_equal(weights[:, 3], weights[:, 4])
    # Each resample draws 3 patients: their multiplicities sum to 3.
    np.testing.assert_array_equal(weights[:, 1] + weights[:, 0] + weights[:, 3], 3)
    assert len({tuple(row) for row in weights}) > 1


def test_bootstrap_interval_is_the_percentiles_of_the_patient_resamples():
    y, scores = scored_labels(90, 2, seed=5)
    groups = np.arange(90) // 3
    result = bootstrap_auc(y, scores, groups, THREE[:2], n_boot=200, seed=7)
    weights = patient_bootstrap_weights(groups, n_boot=200, seed=7)
    for index, label in enumerate(THREE[:2]):
        resampled = fast_auc_batched(y[:, index], scores[:, index], weights)
        resampled = resampled[~np.isnan(resampled)]
        entry = result["per_class"][label]
        assert entry["n_valid"] == len(resampled)
        assert [entry["ci_low"], entry["ci_high"]] == pytest.approx(
            np.quantile(resampled, [0.025, 0.975]).tolist(), abs=1e-12)
        assert entry["ci_low"] <= entry["auc"] <= entry["ci_high"]
    macro = result["macro"]
    assert macro["ci_low"] <= macro["auc"] <= macro["ci_high"] and macro["n_valid"] == 200


def test_bootstrap_resamples_patients_not_images():
    # 40 patients, each with 5 identical images. Resampling patients gives exactly the intervals
    # of the one-image-per-patient data; resampling images would be far too narrow.
    y, scores = scored_labels(40, 2, seed=6)
    patients = np.arange(40)
    once = bootstrap_auc(y, scores, patients, THREE[:2], n_boot=300, seed=2)
    y5, scores5, patients5 = (np.repeat(a, 5, axis=0) for a in (y, scores, patients))
    by_patient = bootstrap_auc(y5, scores5, patients5, THREE[:2], n_boot=300, seed=2)
    by_image = bootstrap_auc(y5, scores5, np.arange(200), THREE[:2], n_boot=300, seed=2)
    assert by_patient["macro"] == pytest.approx(once["macro"], abs=1e-12)
    assert by_patient["n_groups"] == 40 and by_image["n_groups"] == 200

    def width(result):
        return result["macro"]["ci_high"] - result["macro"]["ci_low"]

    assert width(by_image) < 0.7 * width(by_patient)


def test_bootstrap_skips_resamples_without_positives_and_reports_none_for_empty_class():
    y, scores = scored_labels(60, 3, seed=8)
    groups = np.arange(60) // 2
    y[:, 1] = 0
    y[:2, 1] = 1  # Cardiomegaly: one positive patient of 30, missing from ~36% of resamples
    y[:, 2] = 0  # Hernia: no positives at all
    result = bootstrap_auc(y, scores, groups, THREE, n_boot=300, seed=0)
    cardiomegaly, hernia = result["per_class"]["Cardiomegaly"], result["per_class"]["Hernia"]
    assert 100 < cardiomegaly["n_valid"] < 300
    assert hernia == {"auc": None, "ci_low": None, "ci_high": None, "n_valid": 0,
                      "reason": "no positives in split"}
    assert result["macro"]["n_valid"] == 300  # Atelectasis is always there
    assert result["macro"]["auc"] == pytest.approx(
        (result["per_class"]["Atelectasis"]["auc"] + cardiomegaly["auc"]) / 2)


def test_bootstrap_is_reproducible_for_a_seed():
    y, scores = scored_labels(50, 2, seed=9)
    groups = np.arange(50) // 2
    first = bootstrap_auc(y, scores, groups, THREE[:2], n_boot=120, seed=3)
    assert bootstrap_auc(y, scores, groups, THREE[:2], n_boot=120, seed=3) == first
    assert bootstrap_auc(y, scores, groups, THREE[:2], n_boot=120, seed=4) != first


def test_paired_bootstrap_identical_models_differ_by_zero_with_p_one():
    y, scores = scored_labels(60, 3, seed=10)
    result = paired_bootstrap_macro_auc(y, scores, scores.copy(), np.arange(60) // 3, THREE,
                                        n_boot=200)
    assert (result["difference"], result["ci_low"], result["ci_high"]) == (0.0, 0.0, 0.0)
    assert result["p_value"] == 1.0


def test_paired_bootstrap_finds_a_clearly_better_model():
    y, good = scored_labels(120, 3, seed=11, signal=2.0)
    weak = np.random.default_rng(0).random(y.shape)  # no signal about y
    result = paired_bootstrap_macro_auc(y, good, weak, np.arange(120) // 2, THREE, n_boot=200)
    assert result["difference"] > 0.3
    assert result["ci_low"] > 0
    assert result["p_value"] == pytest.approx(2 / 201)  # the smallest 200 resamples can give


# --- calibration --------------------------------------------------------------------------


def test_ece_reliability_and_brier_by_hand():
    # 10 bins. p=0.05 (y 0) -> bin 0: |0.05 - 0| = 0.05;  p=0.15 (y 1) -> bin 1: |0.15 - 1| = 0.85
    # p=0.85 (y 0) -> bin 8: 0.85;  p=0.95, 0.92 (y 1, 1) -> bin 9: |0.935 - 1| = 0.065
    # ECE = (1*0.05 + 1*0.85 + 1*0.85 + 2*0.065) / 5 = 1.88 / 5 = 0.376
    # Brier = (0.05^2 + 0.85^2 + 0.85^2 + 0.05^2 + 0.08^2) / 5 = 1.4564 / 5 = 0.29128
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.92])
    assert expected_calibration_error(y, p) == pytest.approx(0.376)
    assert brier_score(y, p) == pytest.approx(0.29128)
    curve = reliability_curve(y, p)
    assert curve["bin_count"] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 2]
    assert curve["bin_mean_prob"][:3] == pytest.approx([0.05, 0.15, None])
    assert curve["bin_mean_prob"][8:] == pytest.approx([0.85, 0.935])
    assert curve["bin_fraction_positive"] == [0.0, 1.0] + [None] * 6 + [0.0, 1.0]


def test_ece_bin_edges_belong_to_the_upper_bin_and_one_to_the_last():
    # 0.3 -> bin 3 (not bin 2, as linspace's 0.30000000000000004 edge would say); 1.0 -> bin 9.
    counts = reliability_curve([0, 1], [0.3, 1.0])["bin_count"]
    assert counts[3] == 1 and counts[9] == 1
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_calibration_summary_pools_all_image_class_pairs():
    y, p = scored_labels(50, 3, seed=13)
    summary = calibration_summary(y, p, THREE, n_bins=5)
    assert summary["per_class"]["Cardiomegaly"]["ece"] == pytest.approx(
        expected_calibration_error(y[:, 1], p[:, 1], n_bins=5))
    assert summary["overall"]["ece"] == pytest.approx(
        expected_calibration_error(y.ravel(), p.ravel(), n_bins=5))
    # Same number of images per class: pooled Brier is the mean of the per-class ones.
    assert summary["overall"]["brier"] == pytest.approx(
        np.mean([summary["per_class"][label]["brier"] for label in THREE]))


# --- referral -----------------------------------------------------------------------------


def test_referral_raises_auc_when_uncertainty_flags_the_errors():
    rng = np.random.default_rng(14)
    y = (rng.random((200, 3)) < 0.4).astype(np.int8)
    wrong = rng.random(200) < 0.15  # these images get every finding backwards
    scores = np.where(wrong[:, None], 1 - y, y) * 0.6 + rng.random((200, 3)) * 0.01
    curve = referral_curve(y, scores, wrong.astype(float), THREE)
    aucs = [point["macro_auc"] for point in curve]
    assert [point["referred_fraction"] for point in curve] == list(DEFAULT_REFERRAL_FRACTIONS)
    assert all(later >= earlier for earlier, later in zip(aucs, aucs[1:], strict=False))
    assert aucs[0] < 0.9 and aucs[-1] == 1.0
    assert referral_gain(curve, at=0.2) == pytest.approx(aucs[4] - aucs[0])


def test_decision_flip_is_the_chance_each_call_crosses_its_threshold_summed():
    mean = np.array([[0.3, 0.1, 0.9], [0.3, 0.2, 0.5]])
    std = np.array([[0.1, 0.0, 0.2], [0.05, 0.0, 0.0]])
    thresholds = np.array([0.2, 0.1, 0.5])
    # row 0: Phi(-1) + (std 0 on the threshold: 0.5) + Phi(-2); row 1: Phi(-2) + 0 + 0.5
    phi1, phi2 = 0.15865525393145707, 0.022750131948179195
    assert decision_flip_uncertainty(mean, std, thresholds) == pytest.approx(
        [phi1 + 0.5 + phi2, phi2 + 0.5], abs=1e-12)
    with pytest.raises(ValueError, match=r"thresholds has shape \(2,\); expected \(3,\)"):
        decision_flip_uncertainty(mean, std, thresholds[:2])
    with pytest.raises(ValueError, match="y_std must be >= 0"):
        decision_flip_uncertainty(mean, -std, thresholds)
    with pytest.raises(ValueError, match="same"):
        decision_flip_uncertainty(mean, std[:, :2], thresholds)


def test_evaluate_ranks_referral_by_decision_flip_and_keeps_the_max_std_gain():
    rng = np.random.default_rng(11)
    y = (rng.random((300, 3)) < 0.3).astype(int)
    mean = 1 / (1 + np.exp(-(2.0 * y - 1 + rng.normal(0, 1, (300, 3)))))
    std = rng.uniform(0.01, 0.2, (300, 3))
    result = evaluate(y, mean, std, np.arange(300), THREE, n_boot=20, seed=0)
    thresholds = np.array([result["threshold"][label] for label in THREE])
    by_flip = referral_curve(y, mean, decision_flip_uncertainty(mean, std, thresholds), THREE,
                             (0.0, 0.2))
    by_std = referral_curve(y, mean, std.max(axis=1), THREE, (0.0, 0.2))
    assert result["referral"]["gain_at_20"] == pytest.approx(referral_gain(by_flip, 0.2))
    assert result["referral"]["gain_at_20_max_std"] == pytest.approx(referral_gain(by_std, 0.2))
    assert result["referral"]["gain_at_20"] != result["referral"]["gain_at_20_max_std"]
    assert result["referral"]["uncertainty"].startswith("decision flip")


def test_referral_breaks_ties_by_index_and_rounds_the_count():
    y, scores = scored_labels(30, 2, seed=15)
    curve = referral_curve(y, scores, np.zeros(30), THREE[:2], fractions=(0.0, 0.2))
    assert [(p["referred_images"], p["kept_images"]) for p in curve] == [(0, 30), (6, 24)]
    # All equally uncertain: the first six images (lowest indices) are the ones referred.
    assert curve[1]["macro_auc"] == pytest.approx(
        macro_auc(per_class_auc(y[6:], scores[6:], THREE[:2])), abs=1e-12)
    with pytest.raises(ValueError, match=r"no point at referred_fraction=0.3"):
        referral_gain(curve, at=0.3)


def non_plain_values(value, path="") -> list[str]:
    """Paths of values json would not write as they are (numpy scalars, arrays, ...)."""
    if isinstance(value, dict):
        items = [(f"{path}.{key}", item) for key, item in value.items()]
        return [bad for where, item in items for bad in non_plain_values(item, where)]
    if isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        return [bad for where, item in items for bad in non_plain_values(item, where)]
    return [] if value is None or type(value) in (str, int, float) else [f"{path}: {type(value)}"]


# --- evaluate -----------------------------------------------------------------------------


def test_evaluate_returns_flat_json_ready_metrics():
    y, mean = scored_labels(90, 14, seed=16, prevalence=0.25)
    y[:, 7] = 0  # Hernia absent from the test split
    std = np.random.default_rng(1).random(y.shape) * 0.1
    groups = np.arange(90) // 3
    val_y, val_score = scored_labels(60, 14, seed=17, prevalence=0.25)
    result = evaluate(y, mean, std, groups, LABELS, val_true=val_y, val_score=val_score,
                      n_boot=50)
    json.dumps(result, allow_nan=False)  # no NaN: None for missing
    assert not non_plain_values(result)  # no numpy scalars either
    assert result["macro_auc_ci_low"] <= result["macro_auc"] <= result["macro_auc_ci_high"]
    assert result["auc"]["Hernia"] is None and result["no_auc"] == {
        "Hernia": "no positives in split"}
    assert result["auc_ci"]["Hernia"] == {"low": None, "high": None, "n_valid": 0}
    assert result["sensitivity"]["Hernia"] is None
    assert list(result["threshold"].values()) == pytest.approx(
        choose_thresholds(val_y, val_score).tolist())
    assert result["threshold_source"] == "validation (youden)"
    assert set(result["calibration"]) == {"ece", "brier", "per_class"}
    assert result["referral"]["gain_at_20"] == pytest.approx(
        result["referral"]["curve"][4]["macro_auc"] - result["referral"]["curve"][0]["macro_auc"])
    assert (result["n_images"], result["n_patients"], result["n_boot"]) == (90, 30, 50)

    without_val = evaluate(y, mean, std, groups, LABELS, n_boot=20)
    assert set(without_val["threshold"].values()) == {0.5}
    assert without_val["threshold_source"] == "fixed 0.5"


# --- input validation ---------------------------------------------------------------------

Y, S = scored_labels(10, 3, seed=18)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: per_class_auc(Y[:, :2], S[:, :2], THREE),
     r"y_true has shape \(10, 2\); expected \(n_images, 3\)"),
    (lambda: per_class_auc(Y, S[:9], THREE), r"y_score has shape \(9, 3\); expected \(10, 3\)"),
    (lambda: per_class_auc(Y * 2, S, THREE), r"y_true must hold only 0 and 1; got \[2\]"),
    (lambda: per_class_auc(Y, np.full_like(S, np.nan), THREE), r"y_score holds 30 NaN"),
    (lambda: bootstrap_auc(Y, S, np.arange(9), THREE),
     r"groups has shape \(9,\); expected \(10,\)"),
    (lambda: bootstrap_auc(Y, S, np.arange(10), THREE, n_boot=0), r"n_boot must be an int >= 1; got 0"),
    (lambda: bootstrap_auc(Y, S, np.arange(10), THREE, ci=95), r"ci \(.*\) must be a number in \(0, 1\); got 95"),
    (lambda: paired_bootstrap_macro_auc(Y, S, S[:, :2], np.arange(10), THREE),
     r"score_b has shape \(10, 2\); expected \(10, 3\)"),
    (lambda: choose_thresholds(Y, S, method="mcc"), r"method='mcc' is not supported"),
    (lambda: sensitivity_specificity(Y, S, [0.5, 0.5], THREE),
     r"thresholds has shape \(2,\); expected a number or \(3,\)"),
    (lambda: fast_auc(Y[:, 0], S[:, 0], weights=-np.ones(10)), r"weights must be >= 0"),
    (lambda: fast_auc(Y[:, 0], S[:, 0], weights=np.ones(9)),
     r"weights has shape \(9,\); expected \(10,\)"),
    (lambda: brier_score(Y[:, 0], S[:, 0] * 3),
     r"y_prob_col must hold probabilities in \[0, 1\]"),
    (lambda: expected_calibration_error(Y[:, 0], S[:, 0], n_bins=0), r"n_bins must be an int >= 1; got 0"),
    (lambda: referral_curve(Y, S, np.zeros(9), THREE),
     r"uncertainty has shape \(9,\); expected \(10,\)"),
    (lambda: referral_curve(Y, S, np.zeros(10), THREE, fractions=[0, 1.0]),
     r"fractions=\[0.0, 1.0\] is not allowed; expected .* in \[0, 1\)"),
    (lambda: evaluate(Y, S, S, np.arange(10), THREE, val_true=Y),
     r"val_true and val_score go together; got only val_true"),
    (lambda: evaluate(Y, S, -S, np.arange(10), THREE), r"y_std must be >= 0"),
])
def test_invalid_input_names_the_argument_and_what_is_allowed(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_importing_metrics_does_not_import_tensorflow():
    script = "import cxr.evaluation, sys; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
