"""evaluate(): every test metric of one model in one JSON-ready dict (the evaluate stage's call)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr.evaluation.bootstrap import bootstrap_auc
from cxr.evaluation.calibration import calibration_summary
from cxr.evaluation.checks import _check
from cxr.evaluation.discrimination import (
    FALLBACK_THRESHOLD,
    choose_thresholds,
    macro_auprc,
    per_class_auprc,
    sensitivity_specificity,
)
from cxr.evaluation.referral import (
    DECISION_FLIP,
    DEFAULT_REFERRAL_FRACTIONS,
    MAX_STD,
    decision_flip_uncertainty,
    referral_curve,
    referral_gain,
)

# --- the evaluate stage's one call ----------------------------------------------------------


def evaluate(y_true, y_mean, y_std, groups, labels: Sequence[str], *, val_true=None,
             val_score=None, n_boot: int = 1000, seed: int = 0, n_bins: int = 10,
             referral_fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS,
             threshold_method: str = "youden", ci: float = 0.95) -> dict:
    """Every test-split metric of one model, as a JSON-ready dict for `dvc metrics`.

    y_mean / y_std: MC-dropout mean probability and its std per (image, class). Thresholds come
    from (val_true, val_score) when given (`threshold_method`), else FALLBACK_THRESHOLD. The
    referral curve ranks images by :func:`decision_flip_uncertainty` at those thresholds: an
    image is worth a second look when the MC-dropout spread puts its calls in doubt. The gain
    of ranking by the max std over findings instead (the spread alone, which for rare findings
    follows the probability) is kept beside it as ``gain_at_20_max_std``. Headline numbers are
    shallow keys so `dvc metrics diff` lines them up.
    """
    y_true, y_mean = _check(y_true, y_mean, labels, score_name="y_mean", probability=True)
    _, y_std = _check(y_true, y_std, labels, score_name="y_std")
    if (y_std < 0).any():
        raise ValueError(f"y_std must be >= 0; got a minimum of {float(y_std.min())}")
    thresholds, threshold_notes, threshold_source = _evaluation_thresholds(
        val_true, val_score, labels, threshold_method)
    boot = bootstrap_auc(y_true, y_mean, groups, labels, n_boot=n_boot, seed=seed, ci=ci)
    auprc = per_class_auprc(y_true, y_mean, labels)
    operating = sensitivity_specificity(y_true, y_mean, thresholds, labels)
    calibration = calibration_summary(y_true, y_mean, labels, n_bins=n_bins)
    curve = referral_curve(y_true, y_mean, decision_flip_uncertainty(y_mean, y_std, thresholds),
                           labels, referral_fractions)
    has_20 = any(abs(point["referred_fraction"] - 0.2) < 1e-9 for point in curve)
    by_std = referral_curve(y_true, y_mean, y_std.max(axis=1), labels, (0.0, 0.2))
    per_class = boot["per_class"]
    return {
        "macro_auc": boot["macro"]["auc"],
        "macro_auc_ci_low": boot["macro"]["ci_low"],
        "macro_auc_ci_high": boot["macro"]["ci_high"],
        "auc": {label: per_class[label]["auc"] for label in labels},
        "auc_ci": {label: {"low": per_class[label]["ci_low"], "high": per_class[label]["ci_high"],
                           "n_valid": per_class[label]["n_valid"]} for label in labels},
        "macro_auprc": macro_auprc(auprc),
        "auprc": {label: auprc[label]["auprc"] for label in labels},
        "sensitivity": {label: operating[label]["sensitivity"] for label in labels},
        "specificity": {label: operating[label]["specificity"] for label in labels},
        "threshold": {label: operating[label]["threshold"] for label in labels},
        "threshold_source": threshold_source,
        "threshold_notes": threshold_notes,
        "calibration": {"ece": calibration["overall"]["ece"],
                        "brier": calibration["overall"]["brier"],
                        "per_class": calibration["per_class"]},
        "referral": {"uncertainty": DECISION_FLIP, "curve": curve,
                     "gain_at_20": referral_gain(curve, 0.2) if has_20 else None,
                     "max_std_uncertainty": MAX_STD,
                     "gain_at_20_max_std": referral_gain(by_std, 0.2)},
        "no_auc": {label: per_class[label]["reason"] for label in labels
                   if per_class[label]["auc"] is None},
        "n_images": int(len(y_true)),
        "n_patients": boot["n_groups"],
        "n_boot": n_boot,
    }


def _evaluation_thresholds(val_true, val_score, labels, method):
    if (val_true is None) != (val_score is None):
        given = "val_true" if val_score is None else "val_score"
        raise ValueError(f"val_true and val_score go together; got only {given}: pass both "
                         f"(thresholds from validation) or neither (threshold "
                         f"{FALLBACK_THRESHOLD})")
    if val_true is None:
        return np.full(len(labels), FALLBACK_THRESHOLD), {}, f"fixed {FALLBACK_THRESHOLD}"
    val_true, val_score = _check(val_true, val_score, labels, true_name="val_true",
                                 score_name="val_score")
    thresholds, notes = choose_thresholds(val_true, val_score, method, return_notes=True)
    notes_by_label = {label: note for label, note in zip(labels, notes, strict=True) if note}
    return thresholds, notes_by_label, f"validation ({method})"


def mc_dropout_summary(std: np.ndarray, referred: np.ndarray, *, passes: int, threshold: float,
                       seconds: float) -> dict:
    """The ``mc_dropout`` block of the eval metrics: how much was referred, the mean spread."""
    return {
        "passes": passes,
        "threshold": threshold,
        "referred_images_fraction": float(referred.any(axis=1).mean()),
        "referred_findings_fraction": float(referred.mean()),
        "mean_std": float(std.mean()),
        "seconds": round(seconds, 2),
    }


def eval_log_metrics(result: dict) -> dict:
    """The scalars of an :func:`evaluate` result that go to MLflow."""
    return {"test_macro_auc": result["macro_auc"],
            "test_macro_auc_ci_low": result["macro_auc_ci_low"],
            "test_macro_auc_ci_high": result["macro_auc_ci_high"],
            "test_ece": result["calibration"]["ece"],
            "test_brier": result["calibration"]["brier"],
            "referral_gain_at_20": result["referral"]["gain_at_20"],
            **{f"test_auc_{k}": v for k, v in result["auc"].items()}}
