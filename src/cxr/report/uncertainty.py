"""Why referral helps or not: controls for the uncertainty-referral gain (numpy only).

The pipeline refers the images whose calls the MC-dropout spread puts most in doubt
(``cxr.evaluation.referral.decision_flip_uncertainty``: per finding, the chance that a pass
lands on the other side of the operating threshold, summed over findings). Whether that raises
the macro AUC of the images kept depends on *which* images it picks, and on whether the
per-image spread is what picks them, so the report sets the gain beside controls computed
from the same predictions:

* the same rule with each finding's *mean* spread over the test images in place of the
  image's own: the distance to the threshold alone, no per-image uncertainty. When the two
  gains are close, the per-image spread adds nothing to the decision margin;
* the gain of ranking by the max std over findings (the spread alone, the study's measure):
  for rare findings it follows the probability, so it refers the confidently abnormal images;
* the gain of referring the images with the highest predicted probability (the max over
  findings): a referral that uses no uncertainty at all;
* the mean gain of a random referral of the same size (what referring without any signal does);
* the macro AUC on the referred images alone against the one on the images kept: a referral
  that picks the cases the model gets wrong has the lower AUC among the referred;
* the Spearman rank correlation of the max std with the max probability, the share of the
  referred images that carry a finding, and the share of the test positives (image-finding
  pairs) that the referral takes away.

These are computed in the report stage (not in ``evaluate``) from the saved predictions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cxr.evaluation.discrimination import macro_auc, per_class_auc
from cxr.evaluation.referral import decision_flip_uncertainty, referral_curve, referral_gain

N_RANDOM = 200  # random referrals averaged for the "no signal" control


def _gain(y_true, y_score, uncertainty, labels, at: float) -> float | None:
    return referral_gain(referral_curve(y_true, y_score, uncertainty, labels, (0.0, at)), at)


def _subset_auc(y_true, y_score, rows: np.ndarray, labels) -> float | None:
    if not rows.any():
        return None
    return macro_auc(per_class_auc(y_true[rows], y_score[rows], labels))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation uses them."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a, b) -> float | None:
    """Spearman rank correlation of two equal-length vectors (None when either is constant)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(np.sqrt((ra ** 2).sum() * (rb ** 2).sum()))
    return None if denominator == 0.0 else float((ra * rb).sum() / denominator)


def referral_controls(y_true, y_mean, y_std, thresholds, labels: Sequence[str], *,
                      at: float = 0.2, seed: int = 0, n_random: int = N_RANDOM) -> dict:
    """The referral gain at ``at`` referred, with the controls described in the module doc.

    ``y_true`` (0/1), ``y_mean`` (MC-dropout mean) and ``y_std`` (MC-dropout std) are
    (images, findings) arrays in ``labels`` order; ``thresholds`` the operating threshold of
    each finding (the eval metrics' ``threshold``). The pipeline's rule is the decision flip, as
    in ``evaluate``. Returns {"referred_fraction", "referred_images", "gain_flip",
    "gain_flip_mean_spread", "gain_std", "gain_top_probability", "gain_random",
    "auc_referred", "auc_kept", "std_probability_spearman", "abnormal_share_referred",
    "abnormal_share_all", "positives_referred_share"}; the AUCs and shares describe the
    decision-flip referral. The AUCs are macro over the findings with positives and negatives
    in that subset (None when none has).
    """
    y_true = np.asarray(y_true)
    y_mean = np.asarray(y_mean, dtype=np.float64)
    y_std = np.asarray(y_std, dtype=np.float64)
    if not (y_true.shape == y_mean.shape == y_std.shape and y_true.ndim == 2
            and y_true.shape[1] == len(labels)):
        raise ValueError(f"y_true {y_true.shape}, y_mean {y_mean.shape} and y_std {y_std.shape} "
                         f"must all be (images, {len(labels)})")
    if not 0.0 < at < 1.0:
        raise ValueError(f"at must be a fraction in (0, 1); got {at!r}")
    if n_random < 1:
        raise ValueError(f"n_random must be at least 1; got {n_random!r}")
    flip = decision_flip_uncertainty(y_mean, y_std, thresholds)
    mean_spread = np.broadcast_to(y_std.mean(axis=0), y_std.shape)
    flip_mean_spread = decision_flip_uncertainty(y_mean, mean_spread, thresholds)
    max_std, probability = y_std.max(axis=1), y_mean.max(axis=1)
    n_referred = int(np.floor(at * len(y_true) + 0.5))  # as referral_curve rounds
    referred = np.argsort(-flip, kind="stable")[:n_referred]
    rng = np.random.default_rng(seed)
    random_gains = [_gain(y_true, y_mean, rng.random(len(y_true)), labels, at)
                    for _ in range(n_random)]
    random_gains = [gain for gain in random_gains if gain is not None]
    kept = np.ones(len(y_true), dtype=bool)
    kept[referred] = False
    abnormal = y_true.sum(axis=1) > 0
    positives = int(y_true.sum())
    return {
        "referred_fraction": float(at),
        "referred_images": n_referred,
        "gain_flip": _gain(y_true, y_mean, flip, labels, at),
        "gain_flip_mean_spread": _gain(y_true, y_mean, flip_mean_spread, labels, at),
        "gain_std": _gain(y_true, y_mean, max_std, labels, at),
        "gain_top_probability": _gain(y_true, y_mean, probability, labels, at),
        "gain_random": float(np.mean(random_gains)) if random_gains else None,
        "auc_referred": _subset_auc(y_true, y_mean, ~kept, labels),
        "auc_kept": _subset_auc(y_true, y_mean, kept, labels),
        "std_probability_spearman": spearman(max_std, probability),
        "abnormal_share_referred": float(abnormal[referred].mean()) if n_referred else None,
        "abnormal_share_all": float(abnormal.mean()),
        "positives_referred_share": (float(y_true[referred].sum() / positives)
                                     if positives else None),
    }
