"""Subgroup audit: does a model serve every sex, view position and age band equally well?

Per group of the test split: images and patients, macro AUC with a patient-bootstrap interval,
per-finding TPR and FPR at the model's operating thresholds, and the underdiagnosis rate (the
share of images with at least one finding that the model calls "No Finding": no finding at or
above its threshold; Seyyed-Kalantari et al., Nature Medicine 2021) with its interval. Per axis,
the group whose gap against the rest of the test split is largest, with a bootstrap interval
for the difference.

Every interval comes from the same patient resamples as :func:`cxr.evaluation.bootstrap_auc`
for the same seed (``bootstrap._patient_count_chunks``): a group's numbers and the gap to the
rest of the split are computed on one draw of patients, so the difference is paired. Macro AUC
follows the evaluate stage's rule (the mean over the findings with positives and negatives in
the images at hand, per resample over those that still have both).

A group with fewer than ``min_images`` images, or fewer than ``min_positives`` images with a
finding, says nothing reliable: it is reported as ``{"status": "too_small", ...}`` with its
counts, never with a rate or an AUC; a per-finding TPR (FPR) whose group has fewer than
``min_positives`` positives (negatives) of that finding is None for the same reason.

Pure numpy / pandas: no TensorFlow (the conventions of :mod:`cxr.evaluation` hold).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from cxr.evaluation.bootstrap import (
    _auc_from_plan,
    _group_index,
    _macro_per_resample,
    _patient_count_chunks,
    _percentile_interval,
    _rank_plan,
)
from cxr.evaluation.checks import _check, _check_bootstrap_args, _check_thresholds
from cxr.evaluation.discrimination import macro_auc, per_class_auc

# The split table's columns each axis reads, and the order its groups are reported in (values
# not listed here, if a data set has them, follow in sorted order).
AXES: dict[str, str] = {"sex": "Patient Gender", "view": "View Position", "age": "Patient Age"}
GROUP_ORDER: dict[str, tuple[str, ...]] = {"sex": ("M", "F"), "view": ("PA", "AP")}
OK, TOO_SMALL = "ok", "too_small"
# Gaps are reported for these group metrics: (key, which direction is worse for the group).
GAP_METRICS: dict[str, int] = {"macro_auc": -1, "underdiagnosis": +1}
DIGITS = 4  # rounding of every rate and AUC: the file stays short for `dvc metrics diff`


def age_band_names(edges: Sequence[int]) -> list[str]:
    """``[0, 20, 40]`` -> ``["0-20", "20-40", "40+"]``: the last band is open."""
    edges = _check_edges(edges)
    return [f"{low}-{high}" for low, high in zip(edges[:-1], edges[1:], strict=True)] + \
        [f"{edges[-1]}+"]


def age_bands(ages, edges: Sequence[int]) -> np.ndarray:
    """Band name per age (``low <= age < high``; the last band open); None below the first."""
    edges = _check_edges(edges)
    ages = np.asarray(ages, dtype=np.float64)
    names = np.array(age_band_names(edges) + [None], dtype=object)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), ages, side="right") - 1
    index[(index < 0) | np.isnan(ages)] = len(edges)  # below the first edge: no band
    return names[index]


def subgroup_columns(table: pd.DataFrame, age_edges: Sequence[int]) -> dict[str, np.ndarray]:
    """{axis: group name per row} for the sex, view and age axes of a split table."""
    missing = [column for column in AXES.values() if column not in table.columns]
    if missing:
        raise ValueError(f"the split table lacks the columns {missing}; expected "
                         f"{list(AXES.values())} (the NIH Data_Entry_2017.csv columns)")
    return {"sex": table[AXES["sex"]].astype(str).to_numpy(dtype=object),
            "view": table[AXES["view"]].astype(str).to_numpy(dtype=object),
            "age": age_bands(table[AXES["age"]].to_numpy(), age_edges)}


def subgroup_audit(y_true, y_score, patients, groups: Mapping[str, Sequence], thresholds,
                   labels: Sequence[str], *, min_images: int, min_positives: int,
                   n_boot: int = 1000, seed: int = 0, ci: float = 0.95,
                   age_edges: Sequence[int] | None = None) -> dict:
    """The audit of one model's test scores, JSON-ready (the ``subgroups`` key of its metrics).

    ``groups``: {axis: group name per image} (:func:`subgroup_columns`); a None name leaves the
    image out of that axis. ``thresholds``: the operating threshold per finding (in ``labels``
    order), the ones the evaluate stage reports. With ``age_edges`` the age axis lists every
    band, also an empty one. Returns {"settings": {...}, "axes": {axis: {"groups": {name:
    entry}, "gaps": {metric: largest gap or None}}}}.
    """
    y_true, y_score = _check(y_true, y_score, labels)
    thresholds = _check_thresholds(thresholds, len(labels))
    _check_bootstrap_args(n_boot, ci)
    for key, value in (("min_images", min_images), ("min_positives", min_positives)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{key} = {value!r}; expected a positive integer")
    inverse, n_patients = _group_index(patients, len(y_true))
    abnormal = y_true.any(axis=1)
    no_finding_called = ~(y_score >= thresholds).any(axis=1)
    columns = {axis: _check_groups(axis, names, len(y_true)) for axis, names in groups.items()}

    # Every subset whose resampled numbers are needed: each group, and the rest of the split
    # beside it. Two-group axes share them (the rest of M is F), so each is computed once.
    subsets: dict[bytes, np.ndarray] = {}
    plan: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for axis, names in columns.items():
        order = _group_names(axis, names, age_edges)
        plan[axis] = []
        for name in order:
            mask = names == name
            rest = ~mask & (names != None)  # noqa: E711  (elementwise, object array)
            plan[axis].append((name, mask, rest))
            for subset in (mask, rest):
                if _big_enough(subset, abnormal, min_images, min_positives):
                    subsets.setdefault(subset.tobytes(), subset)
    resampled = _resample_subsets(list(subsets.values()), y_true, y_score, abnormal,
                                  no_finding_called, inverse, n_patients, n_boot, seed)
    by_key = dict(zip(subsets, resampled, strict=True))

    axes = {}
    for axis, entries in plan.items():
        reported, gaps = {}, {}
        for name, mask, rest in entries:
            if not _big_enough(mask, abnormal, min_images, min_positives):
                reported[name] = _too_small(mask, abnormal, inverse)
                continue
            samples = by_key[mask.tobytes()]
            reported[name] = _group_entry(mask, samples, y_true, y_score, abnormal,
                                          no_finding_called, thresholds, inverse, labels,
                                          min_positives, ci)
            if _big_enough(rest, abnormal, min_images, min_positives):
                rest_samples = by_key[rest.tobytes()]
                for metric in GAP_METRICS:
                    gaps.setdefault(metric, []).append(
                        (name, samples["point"][metric], rest_samples["point"][metric],
                         samples[metric] - rest_samples[metric]))
        axes[axis] = {"groups": reported,
                      "gaps": {metric: _largest_gap(gaps.get(metric, []), metric, ci)
                               for metric in GAP_METRICS}}
    return {"settings": {"min_images": min_images, "min_positives": min_positives,
                         "n_boot": n_boot, "ci": ci,
                         **({"age_edges": list(age_edges)} if age_edges is not None else {})},
            "axes": axes}


def subgroup_log_metrics(audit: Mapping) -> dict[str, float]:
    """The audit's scalars for MLflow: ``subgroup_AXIS_GROUP_METRIC`` and the largest gaps.

    MLflow metric names allow letters, digits, ``_ - . /`` and spaces: ``80+`` becomes
    ``80plus``. A too-small group logs nothing (no number stands for it).
    """
    metrics: dict[str, float] = {}
    for axis, block in (audit.get("axes") or {}).items():
        for name, entry in block["groups"].items():
            if entry.get("status") != OK:
                continue
            key = f"subgroup_{axis}_{_metric_name(name)}"
            for metric in ("macro_auc", "underdiagnosis"):
                if entry.get(metric) is not None:
                    metrics[f"{key}_{metric}"] = entry[metric]
        for metric, gap in block["gaps"].items():
            if gap is not None:
                metrics[f"subgroup_{axis}_largest_gap_{metric}"] = gap["difference"]
    return metrics


# --- the pieces ---------------------------------------------------------------------------


def _check_edges(edges) -> list[int]:
    values = list(edges) if isinstance(edges, Sequence | np.ndarray) else None
    if (not values or any(isinstance(v, bool) or not isinstance(v, int | np.integer)
                          for v in values)
            or values[0] < 0 or any(b <= a for a, b in zip(values, values[1:], strict=False))):
        raise ValueError(f"age band edges = {edges!r}; expected increasing non-negative "
                         f"integers such as [0, 20, 40, 60, 80]")
    return [int(v) for v in values]


def _check_groups(axis: str, names, n_images: int) -> np.ndarray:
    names = np.asarray(names, dtype=object)
    if names.shape != (n_images,):
        raise ValueError(f"groups[{axis!r}] has shape {names.shape}; expected ({n_images},), "
                         f"one group name per image")
    return names


def _group_names(axis: str, names: np.ndarray, age_edges) -> list[str]:
    present = {name for name in names.tolist() if name is not None}
    if axis == "age" and age_edges is not None:
        order = age_band_names(age_edges)
    else:
        order = [name for name in GROUP_ORDER.get(axis, ()) if name in present]
    return order + sorted(present - set(order))


def _big_enough(mask: np.ndarray, abnormal: np.ndarray, min_images: int,
                min_positives: int) -> bool:
    return int(mask.sum()) >= min_images and int((mask & abnormal).sum()) >= min_positives


def _too_small(mask, abnormal, inverse) -> dict:
    return {"status": TOO_SMALL, "images": int(mask.sum()),
            "patients": int(len(np.unique(inverse[mask]))),
            "abnormal_images": int((mask & abnormal).sum())}


def _resample_subsets(subsets, y_true, y_score, abnormal, no_finding_called, inverse,
                      n_patients, n_boot, seed) -> list[dict]:
    """Per subset: its point macro AUC and underdiagnosis, and both per resample (float[n_boot],
    NaN where a resample leaves it undefined)."""
    prepared = []
    for mask in subsets:
        rows = np.flatnonzero(mask)
        point = per_class_auc(y_true[rows], y_score[rows], [str(c) for c in range(y_true.shape[1])])
        columns = [c for c, entry in enumerate(point.values()) if entry["auc"] is not None]
        plans = []
        for c in columns:
            rank = _rank_plan(y_true[rows, c], y_score[rows, c])
            plans.append((c, rank, inverse[rows[rank.positives]], inverse[rows[rank.negatives]]))
        # Underdiagnosis per resample = counts @ missed / counts @ abnormal, per patient sums.
        missed = np.bincount(inverse[rows], weights=(abnormal & no_finding_called)[rows],
                             minlength=n_patients)
        sick = np.bincount(inverse[rows], weights=abnormal[rows], minlength=n_patients)
        prepared.append((plans, columns, missed, sick, {
            "macro_auc": macro_auc(point),
            "underdiagnosis": float(missed.sum() / sick.sum()) if sick.sum() else None}))
    results = [{"point": point, "macro_auc": np.full(n_boot, np.nan),
                "underdiagnosis": np.full(n_boot, np.nan)}
               for *_, point in prepared]
    start = 0
    for counts in _patient_count_chunks(n_patients, n_boot, seed):
        block = slice(start, start + len(counts))
        for (plans, columns, missed, sick, _), result in zip(prepared, results, strict=True):
            aucs = np.full((len(counts), y_true.shape[1]), np.nan)
            for c, rank, positive_patients, negative_patients in plans:
                aucs[:, c] = _auc_from_plan(rank, np.take(counts, positive_patients, axis=1),
                                            np.take(counts, negative_patients, axis=1))
            if columns:
                result["macro_auc"][block] = _macro_per_resample(aucs, columns)
            denominator = counts @ sick
            with np.errstate(invalid="ignore", divide="ignore"):
                result["underdiagnosis"][block] = np.where(denominator > 0,
                                                           (counts @ missed) / denominator,
                                                           np.nan)
        start += len(counts)
    return results


def _group_entry(mask, samples, y_true, y_score, abnormal, no_finding_called, thresholds,
                 inverse, labels, min_positives, ci) -> dict:
    rows = np.flatnonzero(mask)
    called = y_score[rows] >= thresholds
    truth = y_true[rows] == 1
    tpr, fpr = {}, {}
    for c, label in enumerate(labels):
        positive = truth[:, c]
        tpr[label] = _rate(called[positive, c], min_positives)
        fpr[label] = _rate(called[~positive, c], min_positives)
    entry = {"status": OK, "images": int(len(rows)),
             "patients": int(len(np.unique(inverse[rows]))),
             "abnormal_images": int(abnormal[rows].sum())}
    for metric in GAP_METRICS:
        low, high, _ = _percentile_interval(samples[metric], ci)
        entry[metric] = _round(samples["point"][metric])
        entry[f"{metric}_ci_low"], entry[f"{metric}_ci_high"] = _round(low), _round(high)
    entry["tpr"], entry["fpr"] = tpr, fpr
    return entry


def _rate(hits: np.ndarray, minimum: int) -> float | None:
    return _round(float(hits.mean())) if hits.size >= minimum else None


def _largest_gap(candidates, metric: str, ci: float) -> dict | None:
    """The group whose point gap to the rest is largest (a tie goes to the group it puts at a
    disadvantage: with two groups both gaps have the same size), with its paired interval."""
    usable = [(name, group, rest, diffs) for name, group, rest, diffs in candidates
              if group is not None and rest is not None]
    if not usable:
        return None
    worse = GAP_METRICS[metric]
    name, group, rest, diffs = max(
        usable, key=lambda item: (round(abs(item[1] - item[2]), 12),
                                  worse * (item[1] - item[2])))
    low, high, n_valid = _percentile_interval(diffs, ci)
    beyond = low is not None and (low > 0 or high < 0)
    return {"group": name, "difference": _round(group - rest), "ci_low": _round(low),
            "ci_high": _round(high), "rest": _round(rest), "ci_excludes_zero": bool(beyond),
            "n_valid": n_valid}


def _round(value):
    return None if value is None else round(float(value), DIGITS)


def _metric_name(name: str) -> str:
    return str(name).replace("+", "plus")
