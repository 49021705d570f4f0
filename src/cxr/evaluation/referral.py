"""Uncertainty referral: AUC on the cases kept when the most uncertain are referred."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cxr.evaluation.bootstrap import _auc_from_plan, _macro_per_resample, _rank_plan
from cxr.evaluation.checks import _check, _check_finite, _check_fractions

DEFAULT_REFERRAL_FRACTIONS = tuple(round(0.05 * step, 2) for step in range(11))  # 0 .. 0.5
DECISION_FLIP = ("decision flip: the expected number of findings whose call at the operating "
                 "threshold the MC-dropout spread could reverse (sum over findings of "
                 "Phi(-|mean - threshold| / std))")
MAX_STD = "max MC-dropout std over findings"
# --- uncertainty referral -------------------------------------------------------------------


def decision_flip_uncertainty(y_mean, y_std, thresholds) -> np.ndarray:
    """Per image, how many of its findings' calls the MC-dropout spread puts in doubt.

    For image i and finding k, the MC-dropout probability is taken as normal with the passes'
    mean and std; ``Phi(-|mean - t_k| / std)`` is then the chance that a pass lands on the
    other side of the finding's operating threshold ``t_k`` (the validation-chosen one), i.e.
    that the call could flip. The sum over findings is the expected number of such calls.
    Why not the std alone: for rare findings the probability-space std is largest where the
    probability is (dropout scales the logit's spread by p(1 - p)), so ranking by it refers
    the confidently abnormal images, not the doubtful calls. A std of 0 gives 0 (no doubt)
    unless the mean sits exactly on the threshold (0.5).
    """
    y_mean = _check_finite(np.asarray(y_mean, dtype=np.float64), "y_mean")
    y_std = _check_finite(np.asarray(y_std, dtype=np.float64), "y_std")
    thresholds = _check_finite(np.asarray(thresholds, dtype=np.float64), "thresholds")
    if y_mean.ndim != 2 or y_std.shape != y_mean.shape:
        raise ValueError(f"y_mean {y_mean.shape} and y_std {y_std.shape} must be the same "
                         f"(images, findings) shape")
    if thresholds.shape != (y_mean.shape[1],):
        raise ValueError(f"thresholds has shape {thresholds.shape}; expected "
                         f"({y_mean.shape[1]},), one per finding")
    if (y_std < 0).any():
        raise ValueError(f"y_std must be >= 0; got a minimum of {float(y_std.min())}")
    distance = np.abs(y_mean - thresholds)
    z = np.where(y_std > 0, distance / np.where(y_std > 0, y_std, 1.0),
                 np.where(distance > 0, np.inf, 0.0))
    return _upper_tail(z).sum(axis=1)


# Phi(-z) = erfc(z / sqrt 2) / 2, element-wise (numpy has no erfc; scipy is not a dependency)
_upper_tail = np.vectorize(lambda z: 0.5 * math.erfc(z / math.sqrt(2.0)), otypes=[np.float64])


def referral_curve(y_true, y_score, uncertainty, labels: Sequence[str],
                   fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS) -> list[dict]:
    """Macro AUC on the images kept after referring the most uncertain fraction of them.

    `uncertainty` is one number per image (evaluate uses the max MC-dropout std over findings).
    round(fraction * n_images) images are referred; among equal uncertainties the lower index is
    referred first, so the curve is reproducible. The macro covers the classes that still have
    positives and negatives among the kept images ("n_classes").
    Returns [{"referred_fraction", "referred_images", "kept_images", "macro_auc", "n_classes"}].
    """
    y_true, y_score = _check(y_true, y_score, labels)
    uncertainty = _check_finite(np.asarray(uncertainty, dtype=np.float64), "uncertainty")
    if uncertainty.shape != (len(y_true),):
        raise ValueError(f"uncertainty has shape {uncertainty.shape}; expected "
                         f"({len(y_true)},), one value per image")
    fractions = _check_fractions(fractions)
    most_uncertain_first = np.argsort(-uncertainty, kind="stable")
    referred_counts = np.floor(fractions * len(y_true) + 0.5).astype(np.int64)
    # Every fraction is one 0/1 weight row over the images: one batched AUC call per class.
    kept = np.ones((len(fractions), len(y_true)), dtype=np.int32)
    for row, n_referred in enumerate(referred_counts):
        kept[row, most_uncertain_first[:n_referred]] = 0
    aucs = np.column_stack([_kept_auc(y_true[:, c], y_score[:, c], kept)
                            for c in range(len(labels))])
    macros = _macro_per_resample(aucs, list(range(len(labels))))
    return [{"referred_fraction": float(fraction), "referred_images": int(n_referred),
             "kept_images": int(len(y_true) - n_referred),
             "macro_auc": None if np.isnan(macro) else float(macro),
             "n_classes": int(np.count_nonzero(~np.isnan(row_aucs)))}
            for fraction, n_referred, macro, row_aucs
            in zip(fractions, referred_counts, macros, aucs, strict=True)]


def _kept_auc(column, scores, kept) -> np.ndarray:
    plan = _rank_plan(column, scores)
    return _auc_from_plan(plan, kept[:, plan.positives], kept[:, plan.negatives])


def referral_gain(curve: list[dict], at: float = 0.2) -> float | None:
    """macro_auc after referring `at` of the images minus macro_auc with none referred."""
    start, end = _curve_point(curve, 0.0), _curve_point(curve, at)
    if start["macro_auc"] is None or end["macro_auc"] is None:
        return None
    return float(end["macro_auc"] - start["macro_auc"])


def _curve_point(curve: list[dict], fraction: float) -> dict:
    for point in curve:
        if abs(point["referred_fraction"] - fraction) < 1e-9:
            return point
    available = [point["referred_fraction"] for point in curve]
    raise ValueError(f"the referral curve has no point at referred_fraction={fraction}; "
                     f"it has {available}")
