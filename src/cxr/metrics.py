"""Classification metrics for the evaluate stage. Pure numpy / scikit-learn: no TensorFlow here,
so evaluation, the report and their tests run without it.

Conventions for the whole module:

- `y_true` is (n_images, n_labels) of 0/1; scores and probabilities have the same shape; columns
  follow `labels`.
- A class without positives (or without negatives) has no ROC-AUC or AUPRC: it gets None with a
  reason and is left out of macro averages, instead of a crash or a made-up 0.5.
- An image is called positive at threshold t when score >= t. That is sklearn's `roc_curve`
  convention, so a threshold read off a ROC curve means the same thing when applied.
- Bootstrap resamples patients (`groups`), not images: one patient's images are correlated, and
  resampling them one by one would make the intervals too narrow. A resample gives every image
  the weight "number of times its patient was drawn", and the AUCs of all resamples are then
  computed at once from one sort per class (`fast_auc_batched`).
- Every dict returned is JSON-ready: plain float / int / str / None, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

THRESHOLD_METHODS = ("youden", "f1")
# Used for a class whose validation split cannot choose a threshold, and when no validation
# scores are given at all.
FALLBACK_THRESHOLD = 0.5
DEFAULT_REFERRAL_FRACTIONS = tuple(round(0.05 * step, 2) for step in range(11))  # 0 .. 0.5
# Resamples drawn and scored together. Bounds memory to about this many rows of n_images, and is
# a constant (not derived from the data size) so that a seed always gives the same resamples.
_BOOTSTRAP_CHUNK = 100


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


# --- fast weighted ROC-AUC ------------------------------------------------------------------


@dataclass(frozen=True)
class _RankPlan:
    """What a weighted AUC of one class needs that does not depend on the weights."""

    positives: np.ndarray  # image indices of the positives
    negatives: np.ndarray  # image indices of the negatives, by ascending score
    below: np.ndarray  # per positive: how many negatives score strictly lower
    not_above: np.ndarray  # per positive: how many negatives score lower or equal


def _rank_plan(column: np.ndarray, scores: np.ndarray) -> _RankPlan:
    positives = np.flatnonzero(column == 1)
    negatives = np.flatnonzero(column == 0)
    negatives = negatives[np.argsort(scores[negatives], kind="stable")]
    negative_scores, positive_scores = scores[negatives], scores[positives]
    return _RankPlan(positives, negatives,
                     np.searchsorted(negative_scores, positive_scores, side="left"),
                     np.searchsorted(negative_scores, positive_scores, side="right"))


def _auc_from_plan(plan: _RankPlan, positive_weights: np.ndarray,
                   negative_weights: np.ndarray) -> np.ndarray:
    """AUC per row of weights: (B, n_pos) and (B, n_neg, in plan order) -> float64[B], NaN where a
    row has no positive or no negative weight.

    Mann-Whitney with midranks: a pair (positive, negative) counts 1 when the positive scores
    higher and 1/2 on a tie, times both weights. With the negatives' cumulative weights, every
    positive's share is read off at its two searchsorted positions: O(B * n), no pair loop.
    Integer weights (bootstrap multiplicities) are summed as integers, so the result is exact.
    """
    dtype = _accumulator_dtype(positive_weights, negative_weights)
    rows = negative_weights.shape[0]
    cumulative = np.zeros((rows, negative_weights.shape[1] + 1), dtype=dtype)
    np.cumsum(negative_weights, axis=1, dtype=dtype, out=cumulative[:, 1:])
    # below-weight + not-above-weight = 2 * (strictly below + tied / 2): twice the midrank count.
    twice_wins = (np.take(cumulative, plan.below, axis=1)
                  + np.take(cumulative, plan.not_above, axis=1))
    wide = np.float64 if dtype == np.float64 else np.int64
    numerator = np.einsum("bi,bi->b", positive_weights, twice_wins, dtype=wide)
    denominator = 2 * positive_weights.sum(axis=1, dtype=wide) * cumulative[:, -1].astype(wide)
    auc = np.full(rows, np.nan)
    defined = denominator > 0
    auc[defined] = numerator[defined] / denominator[defined]
    return auc


def _accumulator_dtype(positive_weights: np.ndarray, negative_weights: np.ndarray):
    """int32 for integer weights whose sums cannot overflow it, else int64; float64 for floats.

    The cumulative sum is the hot loop of the bootstrap, and numpy runs it several times faster
    on int32 than on int64 or float64.
    """
    if not (np.issubdtype(positive_weights.dtype, np.integer)
            and np.issubdtype(negative_weights.dtype, np.integer)):
        return np.float64
    bound = max((int(w.max()) * w.shape[1] if w.size else 0)
                for w in (positive_weights, negative_weights))
    return np.int32 if 2 * bound < np.iinfo(np.int32).max else np.int64


def fast_auc(y_true_col, y_score_col, weights=None) -> float:
    """ROC-AUC of one class with optional per-image weights; NaN if a class has no weight.

    Equals sklearn's roc_auc_score(y, s, sample_weight=weights) (ties count 1/2), in O(n log n).
    """
    column, scores = _check_column_pair(y_true_col, y_score_col)
    weights = np.ones(len(column)) if weights is None else _check_weights(weights, (len(column),))
    return float(fast_auc_batched(column, scores, weights[np.newaxis, :])[0])


def fast_auc_batched(y_true_col, y_score_col, weights) -> np.ndarray:
    """ROC-AUC of one class under many weight vectors at once: weights (B, n) -> float64[B].

    Sorts once; each row costs O(n). NaN for a row that leaves no positive or no negative weight.
    """
    column, scores = _check_column_pair(y_true_col, y_score_col)
    weights = np.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"weights has shape {weights.shape}; expected (n_weight_vectors, "
                         f"{len(column)})")
    weights = _check_weights(weights, (weights.shape[0], len(column)))
    plan = _rank_plan(column, scores)
    return _auc_from_plan(plan, weights[:, plan.positives], weights[:, plan.negatives])


# --- patient bootstrap ----------------------------------------------------------------------


def patient_bootstrap_weights(groups, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """int32 (n_boot, n_images): how often each image's patient was drawn in each resample.

    The same resamples that `bootstrap_auc` and `paired_bootstrap_macro_auc` use for this seed;
    for inspection and tests (those functions never build this full matrix).
    """
    groups = np.asarray(groups)
    if groups.ndim != 1:
        raise ValueError(f"groups has shape {groups.shape}; expected (n_images,)")
    _check_bootstrap_args(n_boot, 0.95)
    inverse, n_groups = _group_index(groups, len(groups))
    return np.concatenate([counts[:, inverse]
                           for counts in _patient_count_chunks(n_groups, n_boot, seed)])


def bootstrap_auc(y_true, y_score, groups, labels: Sequence[str], n_boot: int = 1000,
                  seed: int = 0, ci: float = 0.95) -> dict:
    """Point ROC-AUCs with percentile intervals from a patient-level bootstrap.

    Returns {"macro": {"auc", "ci_low", "ci_high", "n_valid"},
             "per_class": {label: {"auc", "ci_low", "ci_high", "n_valid", "reason"}},
             "n_boot", "n_groups"}.

    A resample in which a class has no positive (or no negative) image is skipped for that class;
    n_valid counts the usable ones. A class without an AUC in the full data is None with a reason.
    The macro of one resample is the mean over the classes that have an AUC in the full data AND
    in that resample: dropping a whole resample whenever a rare class (Hernia) misses would skip
    most resamples on small test splits and bias the interval towards resamples rich in it.
    """
    y_true, y_score = _check(y_true, y_score, labels)
    inverse, n_groups = _group_index(groups, len(y_true))
    _check_bootstrap_args(n_boot, ci)
    point = per_class_auc(y_true, y_score, labels)
    columns = [index for index, label in enumerate(labels) if point[label]["auc"] is not None]
    (samples,) = _bootstrap_class_aucs(y_true, [y_score], inverse, n_groups, columns,
                                       n_boot, seed)
    per_class = {}
    for index, label in enumerate(labels):
        low, high, n_valid = _percentile_interval(samples[:, index], ci)
        per_class[label] = {"auc": point[label]["auc"], "ci_low": low, "ci_high": high,
                            "n_valid": n_valid, "reason": point[label]["reason"]}
    low, high, n_valid = _percentile_interval(_macro_per_resample(samples, columns), ci)
    return {"macro": {"auc": macro_auc(point), "ci_low": low, "ci_high": high,
                      "n_valid": n_valid},
            "per_class": per_class, "n_boot": n_boot, "n_groups": n_groups}


def paired_bootstrap_macro_auc(y_true, score_a, score_b, groups, labels: Sequence[str],
                               n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
    """Macro-AUC difference a - b, with both models scored on the SAME patient resamples.

    Returns {"difference", "ci_low", "ci_high", "p_value", "n_valid", "macro_auc_a",
    "macro_auc_b"}. Two-sided p-value from the bootstrap distribution of the difference d:
    2 * min((1 + #{d <= 0}) / (n + 1), (1 + #{d >= 0}) / (n + 1)), clipped to 1; the +1 keeps a
    finite bootstrap from ever claiming p = 0. Macro per resample as in `bootstrap_auc`; both
    models always average over the same classes, since those depend on y_true only.
    """
    y_true, score_a = _check(y_true, score_a, labels, score_name="score_a")
    _, score_b = _check(y_true, score_b, labels, score_name="score_b")
    inverse, n_groups = _group_index(groups, len(y_true))
    _check_bootstrap_args(n_boot, ci)
    point_a, point_b = (per_class_auc(y_true, s, labels) for s in (score_a, score_b))
    columns = [index for index, label in enumerate(labels) if point_a[label]["auc"] is not None]
    if not columns:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None,
                "n_valid": 0, "macro_auc_a": None, "macro_auc_b": None}
    samples_a, samples_b = _bootstrap_class_aucs(y_true, [score_a, score_b], inverse, n_groups,
                                                 columns, n_boot, seed)
    differences = (_macro_per_resample(samples_a, columns)
                   - _macro_per_resample(samples_b, columns))
    low, high, n_valid = _percentile_interval(differences, ci)
    macro_a, macro_b = macro_auc(point_a), macro_auc(point_b)
    return {"difference": macro_a - macro_b, "ci_low": low, "ci_high": high,
            "p_value": _two_sided_p_value(differences[~np.isnan(differences)]),
            "n_valid": n_valid, "macro_auc_a": macro_a, "macro_auc_b": macro_b}


def _group_index(groups, n_images: int) -> tuple[np.ndarray, int]:
    groups = np.asarray(groups)
    if groups.shape != (n_images,):
        raise ValueError(f"groups has shape {groups.shape}; expected ({n_images},), one patient "
                         f"id per image")
    unique, inverse = np.unique(groups, return_inverse=True)
    return inverse.ravel(), len(unique)


def _patient_count_chunks(n_groups: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Per resample, how often each patient was drawn (n_groups draws with replacement)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, _BOOTSTRAP_CHUNK):
        size = min(_BOOTSTRAP_CHUNK, n_boot - start)
        draws = rng.integers(0, n_groups, size=(size, n_groups))
        # One bincount for the whole chunk: shift each resample's draws into its own row.
        draws += np.arange(size)[:, np.newaxis] * n_groups
        counts = np.bincount(draws.ravel(), minlength=size * n_groups)
        yield counts.reshape(size, n_groups).astype(np.int32)


def _bootstrap_class_aucs(y_true, score_matrices, inverse, n_groups, columns, n_boot,
                          seed) -> list[np.ndarray]:
    """Per score matrix, float64 (n_boot, n_labels) of resampled AUCs; NaN = not usable."""
    plans = [[_rank_plan(y_true[:, c], scores[:, c]) for c in columns]
             for scores in score_matrices]
    # Patient of each positive / sorted negative, so a resample's weights are one gather.
    patients = [[(inverse[p.positives], inverse[p.negatives]) for p in model] for model in plans]
    samples = [np.full((n_boot, y_true.shape[1]), np.nan) for _ in score_matrices]
    start = 0
    for counts in _patient_count_chunks(n_groups, n_boot, seed):
        rows = slice(start, start + len(counts))
        for model, model_plans in enumerate(plans):
            for column, plan, (pos, neg) in zip(columns, model_plans, patients[model],
                                                strict=True):
                samples[model][rows, column] = _auc_from_plan(
                    plan, np.take(counts, pos, axis=1), np.take(counts, neg, axis=1))
        start += len(counts)
    return samples


def _macro_per_resample(samples: np.ndarray, columns: list[int]) -> np.ndarray:
    values = samples[:, columns]
    usable = ~np.isnan(values)
    n_usable = usable.sum(axis=1)
    total = np.where(usable, values, 0.0).sum(axis=1)
    macro = np.full(len(samples), np.nan)
    macro[n_usable > 0] = total[n_usable > 0] / n_usable[n_usable > 0]
    return macro


def _percentile_interval(samples: np.ndarray, ci: float) -> tuple[float | None, float | None, int]:
    usable = samples[~np.isnan(samples)]
    if usable.size == 0:
        return None, None, 0
    tail = (1.0 - ci) / 2.0
    low, high = np.quantile(usable, [tail, 1.0 - tail])
    return float(low), float(high), int(usable.size)


def _two_sided_p_value(differences: np.ndarray) -> float | None:
    if differences.size == 0:
        return None
    n = differences.size
    at_most_zero = (1 + np.count_nonzero(differences <= 0)) / (n + 1)
    at_least_zero = (1 + np.count_nonzero(differences >= 0)) / (n + 1)
    return float(min(1.0, 2.0 * min(at_most_zero, at_least_zero)))


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


# --- uncertainty referral -------------------------------------------------------------------


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


# --- the evaluate stage's one call ----------------------------------------------------------


def evaluate(y_true, y_mean, y_std, groups, labels: Sequence[str], *, val_true=None,
             val_score=None, n_boot: int = 1000, seed: int = 0, n_bins: int = 10,
             referral_fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS,
             threshold_method: str = "youden", ci: float = 0.95) -> dict:
    """Every test-split metric of one model, as a JSON-ready dict for `dvc metrics`.

    y_mean / y_std: MC-dropout mean probability and its std per (image, class). Thresholds come
    from (val_true, val_score) when given (`threshold_method`), else FALLBACK_THRESHOLD. The
    referral curve ranks images by the max std over findings: an image is worth a second look if
    the model is unsure about any one finding, which a mean over 14 mostly-confident negatives
    would hide. Headline numbers are shallow keys so `dvc metrics diff` lines them up.
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
    curve = referral_curve(y_true, y_mean, y_std.max(axis=1), labels, referral_fractions)
    has_20 = any(abs(point["referred_fraction"] - 0.2) < 1e-9 for point in curve)
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
        "referral": {"uncertainty": "max MC-dropout std over findings", "curve": curve,
                     "gain_at_20": referral_gain(curve, 0.2) if has_20 else None},
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
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} is not allowed; expected an integer >= 1")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci!r} is not allowed; expected a coverage strictly between 0 "
                         f"and 1, e.g. 0.95")


def _check_n_bins(n_bins) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r} is not allowed; expected an integer >= 1")


def _check_fractions(fractions) -> np.ndarray:
    array = np.asarray(fractions, dtype=np.float64)
    if array.ndim != 1 or array.size == 0 or not ((array >= 0) & (array < 1)).all():
        raise ValueError(f"fractions={np.atleast_1d(array).tolist()} is not allowed; expected a "
                         f"non-empty list of numbers in [0, 1)")
    return array
