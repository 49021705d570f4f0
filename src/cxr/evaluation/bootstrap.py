"""Weighted ROC-AUC from one sort per class, and confidence intervals by patient bootstrap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cxr.evaluation.checks import _check, _check_bootstrap_args, _check_column_pair, _check_weights
from cxr.evaluation.discrimination import macro_auc, per_class_auc

# Resamples drawn and scored together. Bounds memory to about this many rows of n_images, and is
# a constant (not derived from the data size) so that a seed always gives the same resamples.
_BOOTSTRAP_CHUNK = 100


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
