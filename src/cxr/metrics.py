"""Classification metrics. Pure numpy / scikit-learn: no TensorFlow import here.

A class without positives (or without negatives) in the evaluated split has no ROC-AUC: it
gets None with a reason and is left out of the macro average, instead of a crash or a fake 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auc(y_true: np.ndarray, y_score: np.ndarray,
                  labels: Sequence[str]) -> dict[str, dict]:
    """{label: {"auc": float | None, "positives": int, "reason": str | None}}."""
    y_true, y_score = _check(y_true, y_score, labels)
    result = {}
    for index, label in enumerate(labels):
        column = y_true[:, index]
        positives = int(column.sum())
        if positives == 0 or positives == len(column):
            reason = "no positives" if positives == 0 else "no negatives"
            result[label] = {"auc": None, "positives": positives, "reason": f"{reason} in split"}
        else:
            auc = float(roc_auc_score(column, y_score[:, index]))
            result[label] = {"auc": auc, "positives": positives, "reason": None}
    return result


def macro_auc(per_class: dict[str, dict]) -> float | None:
    """Unweighted mean over the classes that have an AUC."""
    values = [entry["auc"] for entry in per_class.values() if entry["auc"] is not None]
    return float(np.mean(values)) if values else None


def _check(y_true, y_score, labels) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_score = np.asarray(y_true), np.asarray(y_score, dtype=np.float64)
    expected = (len(y_true), len(labels))
    if y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(f"y_true has shape {y_true.shape}; expected (n_images, {len(labels)})")
    if y_score.shape != expected:
        raise ValueError(f"y_score has shape {y_score.shape}; expected {expected}")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")
    return y_true.astype(np.int8), y_score
