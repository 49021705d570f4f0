"""Input checks shared by the metric functions (shapes, binary labels, finite scores)."""

from __future__ import annotations

import numpy as np

from cxr.validation import check_fraction, check_int

# --- input validation -----------------------------------------------------------------------


def _check(y_true, y_score, labels, *, true_name="y_true", score_name="y_score",
           probability=False) -> tuple[np.ndarray, np.ndarray]:
    """(n_images, n_labels) 0/1 labels and finite scores of the same shape."""
    y_true = np.asarray(y_true)
    if y_true.ndim != 2 or y_true.shape[1] != len(labels) or len(y_true) == 0:
        raise ValueError(f"{true_name} has shape {y_true.shape}; expected (n_images, "
                         f"{len(labels)}) with n_images >= 1, one column per label")
    return _check_pair(y_true, y_score, true_name, score_name, probability=probability)


def _check_pair(y_true, y_score, true_name, score_name, *,
                probability=False) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true)
    if y_true.ndim != 2 or 0 in y_true.shape:
        raise ValueError(f"{true_name} has shape {y_true.shape}; expected (n_images, n_labels) "
                         f"with both >= 1")
    y_true = _check_binary(y_true, true_name)
    y_score = _check_scores(y_score, y_true.shape, score_name, probability)
    return y_true, y_score


def _check_column_pair(y_true_col, y_score_col, true_name="y_true_col",
                       score_name="y_score_col", *, probability=False):
    column = np.asarray(y_true_col)
    if column.ndim != 1 or len(column) == 0:
        raise ValueError(f"{true_name} has shape {column.shape}; expected (n_images,) with "
                         f"n_images >= 1")
    column = _check_binary(column, true_name)
    return column, _check_scores(y_score_col, column.shape, score_name, probability)


def _check_binary(array: np.ndarray, name: str) -> np.ndarray:
    allowed = np.isin(array, (0, 1))
    if not allowed.all():
        examples = np.unique(array[~allowed])[:3].tolist()
        raise ValueError(f"{name} must hold only 0 and 1; got {examples}")
    return array.astype(np.int8)


def _check_scores(values, shape, name, probability) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}; expected {shape}, the shape of the "
                         f"labels")
    _check_finite(array, name)
    if probability and array.size and (array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must hold probabilities in [0, 1]; got values from "
                         f"{float(array.min())} to {float(array.max())}")
    return array


def _check_finite(array: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds {np.count_nonzero(~np.isfinite(array))} NaN or infinite "
                         f"values; expected finite numbers")
    return array


def _check_weights(weights, shape) -> np.ndarray:
    array = np.asarray(weights)
    if array.shape != shape:
        raise ValueError(f"weights has shape {array.shape}; expected {shape}, one per image")
    if array.dtype == bool or np.issubdtype(array.dtype, np.integer):
        # int64 whatever came in (bool masks, uint64 counts): exact and safe to multiply.
        array = array.astype(np.int64)
    elif np.issubdtype(array.dtype, np.floating):
        array = _check_finite(array.astype(np.float64, copy=False), "weights")
    else:
        raise ValueError(f"weights has dtype {array.dtype}; expected integers or floats")
    if (array < 0).any():
        raise ValueError(f"weights must be >= 0; got a minimum of {array.min()}")
    return array


def _check_thresholds(thresholds, n_labels: int) -> np.ndarray:
    array = np.asarray(thresholds, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(n_labels, float(array))
    if array.shape != (n_labels,):
        raise ValueError(f"thresholds has shape {array.shape}; expected a number or "
                         f"({n_labels},), one per label")
    return _check_finite(array, "thresholds")


def _check_bootstrap_args(n_boot, ci) -> None:
    check_int(n_boot, "n_boot", min_val=1, type_error=ValueError)
    check_fraction(ci, "ci (the interval's coverage, e.g. 0.95)", include_boundaries="neither",
                   type_error=ValueError)


def _check_n_bins(n_bins) -> None:
    check_int(n_bins, "n_bins", min_val=1, type_error=ValueError)


def _check_fractions(fractions) -> np.ndarray:
    array = np.asarray(fractions, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not ((array >= 0) & (array < 1)).all():
        raise ValueError(f"fractions={np.atleast_1d(array).tolist()} is not allowed; expected a "
                         f"non-empty list of numbers in [0, 1)")
    return array
