"""The train stage's result: ``metrics/train/MODEL.json`` as a dict (pure numpy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cxr.evaluation import macro_auc, per_class_auc
from cxr.training.fit import history_rows


def train_summary(model: str, history: Mapping[str, list[dict]], val_true: np.ndarray,
                  val_scores: np.ndarray, labels: Sequence[str], *, seconds: float,
                  train_images: int, parameters: int, mlflow_run_id: str | None) -> dict:
    """Validation AUCs of the trained model, epochs per phase, last epoch's metrics, speed."""
    val_auc = per_class_auc(val_true, val_scores, labels)
    rows = history_rows(history)
    epochs_run = len(rows)
    return {
        "model": model,
        "val_macro_auc": macro_auc(val_auc),
        "val_auc": {label: entry["auc"] for label, entry in val_auc.items()},
        "epochs": {phase: len(phase_rows) for phase, phase_rows in history.items()},
        "final": {k: v for k, v in rows[-1].items() if k not in ("step", "phase")}
        if rows else {},
        "train_images": int(train_images),
        "train_seconds": round(seconds, 1),
        "train_images_per_second": round(train_images * epochs_run / seconds, 1)
        if epochs_run else None,
        "parameters": int(parameters),
        "mlflow_run_id": mlflow_run_id,
    }
