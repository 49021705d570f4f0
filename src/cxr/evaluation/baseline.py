"""The linear baseline: one logistic regression per finding on small thumbnails.

It shows what the deep models add over pixel intensities at a coarse scale, and guards against
phantoms that have become trivially separable. Pure numpy / scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from cxr.validation import check_scalar


def thumbnails(images: np.ndarray, size: int = 16) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) pixels -> (N, size * size) float32 in [0, 1].

    Area average over equal blocks (H and W must be multiples of `size`); colour channels are
    averaged to gray first.
    """
    check_scalar(size, "size", "int", min_val=1)
    images = np.asarray(images)
    if images.ndim == 4:
        images = images.mean(axis=-1)
    if images.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C); got {images.shape}")
    n, height, width = images.shape
    if height % size or width % size:
        raise ValueError(f"images of {height}x{width} px cannot be averaged into {size}x{size} "
                         f"blocks; use an image size that is a multiple of {size}")
    blocks = images.reshape(n, size, height // size, size, width // size)
    return (blocks.mean(axis=(2, 4), dtype=np.float64) / 255.0).reshape(n, -1).astype(np.float32)


@dataclass
class LinearBaseline:
    """Standardised thumbnails -> one class-balanced, L2-regularised logistic regression per
    finding. A finding with a single class in the training labels scores a constant 0."""

    regularization: float = 0.05
    max_iter: int = 2000

    def fit(self, features: np.ndarray, labels: np.ndarray) -> LinearBaseline:
        check_scalar(self.regularization, "regularization", "number", min_val=0.0,
                     include_boundaries="neither")
        labels = np.asarray(labels)
        if labels.ndim != 2 or len(labels) != len(features):
            raise ValueError(f"labels must have shape ({len(features)}, n_labels); "
                             f"got {labels.shape}")
        self.scaler_ = StandardScaler().fit(features)
        x = self.scaler_.transform(features)
        self.models_: list[LogisticRegression | None] = []
        for column in labels.T:
            if column.min() == column.max():
                self.models_.append(None)
                continue
            model = LogisticRegression(C=self.regularization, max_iter=self.max_iter,
                                       class_weight="balanced")
            self.models_.append(model.fit(x, column))
        return self

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N, n_labels) scores (log-odds); higher = more likely positive."""
        x = self.scaler_.transform(features)
        columns = [np.zeros(len(x)) if model is None else model.decision_function(x)
                   for model in self.models_]
        return np.stack(columns, axis=1)


# Rows decoded at once when thumbnails are taken from a store: bounds the baseline's memory to
# THUMBNAIL_CHUNK images (2048 x 224 x 224 bytes = 103 MB) plus the thumbnails themselves
# (4 bytes x size^2 per image: 40 MB for NIH's 39,000 training images at 16 x 16).
THUMBNAIL_CHUNK = 2048


def store_thumbnails(images: np.ndarray, rows: np.ndarray, size: int = 16,
                     chunk: int = THUMBNAIL_CHUNK) -> np.ndarray:
    """:func:`thumbnails` of ``images[rows]``, ``chunk`` rows at a time, so a memory-mapped
    store is never loaded whole; the same values as one call on all rows."""
    rows = np.asarray(rows, dtype=np.int64)
    check_scalar(chunk, "chunk", "int", min_val=1)
    if not len(rows):
        return np.zeros((0, size * size), dtype=np.float32)
    return np.concatenate([thumbnails(images[rows[start:start + chunk]], size)
                           for start in range(0, len(rows), chunk)])


def fit_and_score(train_images: np.ndarray, train_labels: np.ndarray,
                  test_images: np.ndarray, size: int = 16,
                  regularization: float = 0.05, train_rows: np.ndarray | None = None,
                  test_rows: np.ndarray | None = None) -> np.ndarray:
    """Fit the baseline on the training images and return its scores on the test images.

    With ``train_rows`` / ``test_rows`` the images are a store's (memory-mapped) array and the
    rows pick the split's images, read in chunks (:func:`store_thumbnails`)."""
    def features(images, rows):
        return thumbnails(images, size) if rows is None else store_thumbnails(images, rows, size)

    baseline = LinearBaseline(regularization=regularization)
    baseline.fit(features(train_images, train_rows), train_labels)
    return baseline.decision_function(features(test_images, test_rows))


def baseline_summary(bootstrap: dict, labels: Sequence[str], settings: dict) -> dict:
    """The `metrics/baseline.json` document from `bootstrap_auc`'s result."""
    macro = bootstrap["macro"]
    return {
        "model": "baseline",
        "macro_auc": macro["auc"],
        "macro_auc_ci_low": macro["ci_low"],
        "macro_auc_ci_high": macro["ci_high"],
        "auc": {label: bootstrap["per_class"][label]["auc"] for label in labels},
        "settings": settings,
    }
