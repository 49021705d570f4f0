"""Per-class ROC-AUC / AUPRC, operating thresholds (Youden, F1) and sensitivity/specificity.

Conventions of the whole evaluation package: see cxr.evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from cxr.evaluation.checks import _check, _check_pair, _check_thresholds

THRESHOLD_METHODS = ("youden", "f1")
# Used for a class whose validation split cannot choose a threshold, and when no validation
# scores are given at all.
FALLBACK_THRESHOLD = 0.5

# --- point metrics per class ---------------------------------------------------------------


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray,
                  labels: Sequence[str]) -> dict[str, dict]:
    """{label: {"auc": float | None, "positives": int, "reason": str | None}}."""
    return _per_class(y_true, y_score, labels, "auc", roc_auc_score)


def macro_auc(per_class: dict[str, dict]) -> float | None:
    """Unweighted mean over the classes that have an AUC."""
    return _macro(per_class, "auc")


def per_class_auprc(y_true: np.ndarray, y_score: np.ndarray,
                    labels: Sequence[str]) -> dict[str, dict]:
    """{label: {"auprc": float | None, "positives": int, "reason": str | None}}.

    Average precision (sklearn's step-wise area under the precision-recall curve). A class
    without negatives gets None too: its AP would be 1.0 whatever the model does.
    """
    return _per_class(y_true, y_score, labels, "auprc", average_precision_score)


def macro_auprc(per_class: dict[str, dict]) -> float | None:
    """Unweighted mean over the classes that have an AUPRC."""
    return _macro(per_class, "auprc")


def _per_class(y_true, y_score, labels, key, score_function) -> dict[str, dict]:
    y_true, y_score = _check(y_true, y_score, labels)
    result = {}
    for index, label in enumerate(labels):
        column = y_true[:, index]
        positives = int(column.sum())
        reason = _one_class_reason(positives, len(column), "split")
        value = None if reason else float(score_function(column, y_score[:, index]))
        result[label] = {key: value, "positives": positives, "reason": reason}
    return result


def _macro(per_class: dict[str, dict], key: str) -> float | None:
    values = [entry[key] for entry in per_class.values() if entry[key] is not None]
    return float(np.mean(values)) if values else None


def _one_class_reason(positives: int, n_images: int, where: str) -> str | None:
    if positives == 0:
        return f"no positives in {where}"
    if positives == n_images:
        return f"no negatives in {where}"
    return None


# --- operating points -----------------------------------------------------------------------


def choose_thresholds(y_true_val: np.ndarray, y_score_val: np.ndarray, method: str = "youden",
                      *, return_notes: bool = False):
    """One decision threshold per class, chosen on the VALIDATION split (never on test).

    method="youden" maximises sensitivity + specificity - 1; method="f1" maximises F1. Among
    equally good thresholds the highest (the more specific one) wins. A class with no positives
    (or no negatives) in validation cannot choose: it gets FALLBACK_THRESHOLD and a note.

    Returns float64[n_labels]; with return_notes=True, (thresholds, notes) where notes[i] is
    None or why class i fell back.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method={method!r} is not supported; expected one of {THRESHOLD_METHODS}")
    y_true, y_score = _check_pair(y_true_val, y_score_val, "y_true_val", "y_score_val")
    choose = _youden_threshold if method == "youden" else _f1_threshold
    thresholds = np.full(y_true.shape[1], FALLBACK_THRESHOLD)
    notes: list[str | None] = [None] * y_true.shape[1]
    for index in range(y_true.shape[1]):
        column = y_true[:, index]
        reason = _one_class_reason(int(column.sum()), len(column), "validation split")
        if reason:
            notes[index] = f"{reason}; threshold {FALLBACK_THRESHOLD} used"
        else:
            thresholds[index] = choose(column, y_score[:, index])
    return (thresholds, notes) if return_notes else thresholds


def _youden_threshold(column: np.ndarray, scores: np.ndarray) -> float:
    fpr, tpr, thresholds = roc_curve(column, scores, drop_intermediate=False)
    # roc_curve starts at threshold +inf ("call nothing positive"): not a usable threshold.
    youden = np.where(np.isfinite(thresholds), tpr - fpr, -np.inf)
    return float(thresholds[np.argmax(youden)])  # thresholds descend: first max = highest


def _f1_threshold(column: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(column, scores)
    # The last point (recall 0, precision 1) has no threshold; thresholds ascend here, so the
    # last maximum is the highest threshold.
    precision, recall = precision[:-1], recall[:-1]
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return float(thresholds[len(f1) - 1 - np.argmax(f1[::-1])])


def sensitivity_specificity(y_true: np.ndarray, y_score: np.ndarray, thresholds,
                            labels: Sequence[str]) -> dict[str, dict]:
    """{label: {"threshold", "sensitivity" | None, "specificity" | None}}, positive = score >= t.

    `thresholds` is one number for all classes or one per class. Sensitivity is None for a class
    without positives, specificity None for one without negatives.
    """
    y_true, y_score = _check(y_true, y_score, labels)
    thresholds = _check_thresholds(thresholds, len(labels))
    predicted = y_score >= thresholds
    result = {}
    for index, label in enumerate(labels):
        positive = y_true[:, index] == 1
        called = predicted[:, index]
        result[label] = {
            "threshold": float(thresholds[index]),
            "sensitivity": _rate(called[positive]),
            "specificity": _rate(~called[~positive]),
        }
    return result


def _rate(hits: np.ndarray) -> float | None:
    return float(hits.mean()) if hits.size else None
