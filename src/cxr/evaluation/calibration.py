"""Calibration: expected calibration error, reliability curve, Brier score."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr.evaluation.checks import _check, _check_column_pair, _check_n_bins

# --- calibration ----------------------------------------------------------------------------


def expected_calibration_error(y_true_col, y_prob_col, n_bins: int = 10) -> float:
    """ECE over equal-width bins on [0, 1]: sum of (count / n) * |mean p - fraction positive|.

    Bin i holds i/n_bins <= p < (i+1)/n_bins; p = 1 goes to the last bin.
    """
    column, probabilities = _check_column_pair(y_true_col, y_prob_col, "y_true_col",
                                               "y_prob_col", probability=True)
    counts, probability_sums, positive_sums = _bin_sums(column, probabilities, n_bins)
    # count/n * |sum_p/count - sum_y/count| = |sum_p - sum_y| / n: empty bins add 0.
    return float(np.abs(probability_sums - positive_sums).sum() / len(column))


def reliability_curve(y_true_col, y_prob_col, n_bins: int = 10) -> dict:
    """{"bin_edges", "bin_mean_prob", "bin_fraction_positive", "bin_count"}: one entry per bin
    (mean and fraction None for an empty bin), for reliability diagrams."""
    column, probabilities = _check_column_pair(y_true_col, y_prob_col, "y_true_col",
                                               "y_prob_col", probability=True)
    counts, probability_sums, positive_sums = _bin_sums(column, probabilities, n_bins)
    return {
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "bin_mean_prob": _bin_means(probability_sums, counts),
        "bin_fraction_positive": _bin_means(positive_sums, counts),
        "bin_count": counts.tolist(),
    }


def brier_score(y_true_col, y_prob_col) -> float:
    """Mean squared difference between probability and outcome (0 is perfect)."""
    column, probabilities = _check_column_pair(y_true_col, y_prob_col, "y_true_col",
                                               "y_prob_col", probability=True)
    return float(np.mean((probabilities - column) ** 2))


def calibration_summary(y_true, y_prob, labels: Sequence[str], n_bins: int = 10) -> dict:
    """{"per_class": {label: {"ece", "brier"}}, "overall": {"ece", "brier"}}; overall pools every
    (image, class) pair, so frequent classes weigh more there than in a mean over classes."""
    y_true, y_prob = _check(y_true, y_prob, labels, score_name="y_prob", probability=True)
    per_class = {label: {"ece": expected_calibration_error(y_true[:, i], y_prob[:, i], n_bins),
                         "brier": brier_score(y_true[:, i], y_prob[:, i])}
                 for i, label in enumerate(labels)}
    pooled_true, pooled_prob = y_true.ravel(), y_prob.ravel()
    return {"per_class": per_class,
            "overall": {"ece": expected_calibration_error(pooled_true, pooled_prob, n_bins),
                        "brier": brier_score(pooled_true, pooled_prob)}}


def _bin_sums(column, probabilities, n_bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _check_n_bins(n_bins)
    # floor(p * n_bins) rather than np.digitize on linspace edges: linspace(0, 1, 11)[3] is
    # 0.30000000000000004, which would put p = 0.3 in the bin below.
    index = np.minimum((probabilities * n_bins).astype(np.int64), n_bins - 1)
    return (np.bincount(index, minlength=n_bins),
            np.bincount(index, weights=probabilities, minlength=n_bins),
            np.bincount(index, weights=column.astype(np.float64), minlength=n_bins))


def _bin_means(sums: np.ndarray, counts: np.ndarray) -> list[float | None]:
    return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]
