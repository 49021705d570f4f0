"""Train/val/test splits: patient-grouped iterative stratification, and the leaky alternatives.

``split_by_patient`` (our weighted iterative stratification, Sechidis et al. 2011: whole
patients, balanced images, deterministic for a seed), ``split_by_patient_iterstrat``,
``split_by_image`` (leaks patients; comparison only) and ``split_official`` (NIH's lists) return
'train'/'val'/'test' per image; ``split_summary`` measures fractions, prevalence and leakage.
The test set depends only on the data, the seed and the test fraction. Why our own algorithm,
and how close it gets: docs/DESIGN.md.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterable, Mapping, Sequence
from math import ceil

import numpy as np
import pandas as pd

from cxr.labels import LABELS
from cxr.validation import check_fraction, check_int

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
PATIENT_ID = "Patient ID"
IMAGE_INDEX = "Image Index"
_TOLERANCE = 1e-6
_EXAMPLES = 5
_DIGITS = 6  # rounding of floats in split_summary, so metric diffs stay readable


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def check_fractions(fractions) -> tuple[float, float, float]:
    """(train, val, test) from a 3-sequence or a {train, val, test} mapping; validated."""
    if isinstance(fractions, Mapping):
        if set(fractions) != set(SPLITS):
            raise ValueError(f"fractions must have exactly the keys {list(SPLITS)}, "
                             f"got {sorted(fractions)}")
        fractions = [fractions[name] for name in SPLITS]
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence | np.ndarray):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    values = list(fractions)
    if len(values) != 3 or not all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    train, val, test = (float(v) for v in values)
    if min(train, val, test) < 0 or not np.isfinite([train, val, test]).all():
        raise ValueError(f"fractions must be non-negative, got {fractions!r}")
    if abs(train + val + test - 1.0) > _TOLERANCE:
        raise ValueError(f"fractions must sum to 1, got {fractions!r} "
                         f"(sum {train + val + test:.6g})")
    if train <= 0:
        raise ValueError(f"the train fraction must be positive, got {fractions!r}")
    return train, val, test


def _check_seed(seed) -> int:
    return check_int(seed, "seed", min_val=0, type_error=ValueError)


def _check_table(df: pd.DataFrame, needed: Iterable[str]) -> np.ndarray:
    """Return the label matrix after checking columns and 0/1 values."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in (*needed, *LABELS) if c not in df.columns]
    if missing:
        raise ValueError(f"df is missing columns {missing}; columns are {list(df.columns)}")
    if df.empty:
        raise ValueError("df has no rows to split")
    labels = df.loc[:, list(LABELS)].to_numpy()
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("label columns must hold only 0 and 1")
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# The algorithm (Sechidis et al. 2011, Algorithm 1) on weighted items
# ---------------------------------------------------------------------------------------------


class _Demand:
    """What each fold still wants: positives per label and size (images), per the ratios.

    Plain Python lists, not numpy: an item touches one or two labels and two folds, where a
    numpy call costs more than the arithmetic (this keeps 112k images near a second).
    """

    def __init__(self, positives: np.ndarray, sizes: np.ndarray, ratios: np.ndarray):
        totals = positives.sum(axis=0)
        self.labels: list[list[float]] = np.outer(ratios, totals).tolist()
        self.sizes: list[float] = (ratios * sizes.sum()).tolist()
        # Overshoot is measured relative to each total, so one surplus Hernia image (227 in
        # NIH) weighs as much as ~90 surplus Infiltration images (19,894).
        self.label_scale: list[float] = (1.0 / np.maximum(totals, 1)).tolist()
        self.size_scale = 1.0 / max(int(sizes.sum()), 1)

    def overshoot(self, entries: list[tuple[int, int]], size: int) -> list[float]:
        """Per fold: how far the item (its (label, positives) entries) would overfill it.

        Demands are rounded up first: a fold that still wants 0.3 Hernia images may take one
        (someone has to), otherwise that unavoidable fraction, scaled by Hernia's tiny total,
        would outweigh a real surplus of a common finding.
        """
        scale = self.label_scale
        return [
            sum(max(count - ceil(wants[label]), 0) * scale[label] for label, count in entries)
            + max(size - ceil(room), 0) * self.size_scale
            for wants, room in zip(self.labels, self.sizes, strict=True)
        ]

    def take(self, fold: int, entries: list[tuple[int, int]], size: int) -> None:
        wants = self.labels[fold]
        for label, count in entries:
            wants[label] -= count
        self.sizes[fold] -= size


def _best(folds: list[int], score: list[float]) -> list[int]:
    top = max(score[f] for f in folds)
    return [f for f in folds if score[f] == top]


def _choose_fold(demand: _Demand, entries: list[tuple[int, int]], size: int,
                 label: int | None, rng: np.random.Generator) -> int:
    """Where one item goes; each rule only breaks the ties of the one before.

    1. the folds it would overfill least (all of them while there is room);
    2. the fold that most wants the label being distributed (the paper's rule);
    3. the fold that most wants images (the paper's tie-break);
    4. at random (seeded).
    """
    overshoot = demand.overshoot(entries, size)
    least = min(overshoot) + 1e-12
    folds = [f for f, value in enumerate(overshoot) if value <= least]
    if len(folds) > 1 and label is not None:
        folds = _best(folds, [wants[label] for wants in demand.labels])
    if len(folds) > 1:
        folds = _best(folds, demand.sizes)
    return folds[0] if len(folds) == 1 else folds[int(rng.integers(len(folds)))]


def _entries(positives: np.ndarray) -> list[list[tuple[int, int]]]:
    """Sparse rows: for each item, its (label, positives) pairs with positives > 0."""
    entries: list[list[tuple[int, int]]] = [[] for _ in range(len(positives))]
    rows, labels = np.nonzero(positives)
    counts = positives[rows, labels]
    for row, label, count in zip(rows.tolist(), labels.tolist(), counts.tolist(), strict=True):
        entries[row].append((label, count))
    return entries


def _largest_first(items: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Heaviest items first, the random order kept among equals.

    Greedy filling places big patients while every fold still has room and lets small ones
    even out the remainder (as in first-fit-decreasing bin packing). With unit weights (image
    level) the order is unchanged.
    """
    return items[np.argsort(-np.asarray(weights), kind="stable")]


def _pick_rarest(remaining: np.ndarray, rng: np.random.Generator) -> int:
    """The label with the fewest (but some) unassigned items; ties at random."""
    candidates = np.flatnonzero(remaining > 0)
    rarest = candidates[remaining[candidates] == remaining[candidates].min()]
    return int(rarest[0] if len(rarest) == 1 else rarest[rng.integers(len(rarest))])


def iterative_stratification(has_label: np.ndarray, positives: np.ndarray, sizes: np.ndarray,
                             ratios: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Fold index (into ``ratios``) for each item.

    ``has_label`` (items x labels, bool) decides which items carry a label; ``positives``
    (items x labels) and ``sizes`` (items) are what the folds should receive in proportion to
    ``ratios``. As in the paper: repeatedly take the label with the fewest remaining items and
    give each of its items to the fold that most wants that label; items without labels then
    fill the folds' remaining size. Two changes make it work on indivisible weighted items
    (patients): items go heaviest first (:func:`_largest_first`), and a fold is only chosen
    for its demand among the folds the item overfills least (:func:`_choose_fold`), so one
    big patient cannot swamp a small val set. Items are visited in a seeded random order,
    which is the paper's random tie-breaking.
    """
    ratios = np.asarray(ratios, dtype=np.float64)
    order = rng.permutation(len(sizes))
    has_label, positives, sizes = has_label[order], positives[order], sizes[order]
    demand = _Demand(positives, sizes, ratios)
    folds = np.full(len(sizes), -1, dtype=np.int64)
    unassigned = np.ones(len(sizes), dtype=bool)
    remaining = has_label.sum(axis=0)

    entries, item_sizes = _entries(positives), sizes.tolist()

    def place(items: np.ndarray, label: int | None) -> None:
        # The only per-item Python loop, a few microseconds an item.
        for item in items.tolist():
            fold = _choose_fold(demand, entries[item], item_sizes[item], label, rng)
            demand.take(fold, entries[item], item_sizes[item])
            folds[item] = fold
        unassigned[items] = False

    while (remaining > 0).any():
        label = _pick_rarest(remaining, rng)
        items = np.flatnonzero(has_label[:, label] & unassigned)
        place(_largest_first(items, positives[items, label]), label)
        remaining -= has_label[items].sum(axis=0)
    rest = np.flatnonzero(unassigned)
    place(_largest_first(rest, sizes[rest]), None)

    result = np.empty(len(sizes), dtype=np.int64)
    result[order] = folds
    return result


def _three_way(has_label, positives, sizes, fractions, rng) -> np.ndarray:
    """Split names per item: test vs rest first, then val vs train inside the rest."""
    train, val, test = fractions
    names = np.full(len(sizes), "train", dtype=object)
    rest = np.arange(len(sizes))
    if test > 0:
        folds = iterative_stratification(has_label, positives, sizes, [test, 1 - test], rng)
        names[folds == 0] = "test"
        rest = np.flatnonzero(folds == 1)
    if val > 0:
        share = val / (train + val)
        folds = iterative_stratification(has_label[rest], positives[rest], sizes[rest],
                                         [share, 1 - share], rng)
        names[rest[folds == 0]] = "val"
    return names


def _as_series(names: np.ndarray, df: pd.DataFrame, fractions) -> pd.Series:
    split = pd.Series(names, index=df.index, name="split").astype(str)
    for name, fraction in zip(SPLITS, fractions, strict=True):
        if fraction > 0 and not (split == name).any():
            raise ValueError(f"the {name} split is empty: {len(df)} images are too few for "
                             f"fractions {tuple(fractions)}")
    return split


# ---------------------------------------------------------------------------------------------
# Public splits
# ---------------------------------------------------------------------------------------------


def _patient_items(df: pd.DataFrame, labels: np.ndarray):
    """Per-patient (sorted by id) any-positive labels, positive-image counts and image counts."""
    codes, _ = pd.factorize(df[PATIENT_ID], sort=True)
    if (codes < 0).any():
        raise ValueError(f"{PATIENT_ID} must not be missing; {int((codes < 0).sum())} rows are")
    n_patients = codes.max() + 1
    positives = np.stack([np.bincount(codes, weights=labels[:, j], minlength=n_patients)
                          for j in range(labels.shape[1])], axis=1).astype(np.int64)
    sizes = np.bincount(codes, minlength=n_patients).astype(np.int64)
    return codes, positives > 0, positives, sizes


def _patient_names(df, labels, fractions, rng) -> np.ndarray:
    codes, has_label, positives, sizes = _patient_items(df, labels)
    return _three_way(has_label, positives, sizes, fractions, rng)[codes]


def split_by_patient(df: pd.DataFrame, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> pd.Series:
    """'train'/'val'/'test' per image (index aligned to ``df``); no patient in two splits.

    Patients are stratified by their any-positive labels, with image counts as weights (see
    the module docstring), so per-class image prevalence and image fractions stay close to
    the requested ones.
    """
    fractions = check_fractions(fractions)
    rng = np.random.default_rng(_check_seed(seed))
    labels = _check_table(df, [PATIENT_ID])
    return _as_series(_patient_names(df, labels, fractions, rng), df, fractions)


def split_by_patient_iterstrat(df: pd.DataFrame, fractions=(0.7, 0.1, 0.2),
                               seed: int = 0) -> pd.Series:
    """The same patient-level split with iterstrat's ``MultilabelStratifiedShuffleSplit``.

    One row per patient (its any-positive labels), every patient counting once whatever its
    number of images; test vs rest first, then val vs train. For comparison with the
    literature's tool (``split.stratifier: iterstrat``): it balances patients, not images, so
    per-class image prevalence drifts more than with :func:`split_by_patient`.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    train, val, test = check_fractions(fractions)
    seed = _check_seed(seed)
    codes, has_label, _, _ = _patient_items(df, _check_table(df, [PATIENT_ID]))
    names = np.full(len(has_label), "train", dtype=object)
    rest = np.arange(len(has_label))

    def carve(items: np.ndarray, share: float, name: str) -> np.ndarray:
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=share,
                                                    random_state=seed)
        keep, carved = next(splitter.split(np.zeros((len(items), 1)), has_label[items]))
        names[items[carved]] = name
        return items[keep]

    if test > 0:
        rest = carve(rest, test, "test")
    if val > 0:
        carve(rest, val / (train + val), "val")
    return _as_series(names[codes], df, (train, val, test))


def split_by_image(df: pd.DataFrame, fractions=(0.7, 0.1, 0.2), seed: int = 0) -> pd.Series:
    """Image-level iterative stratification, the original study's method: LEAKS patients.

    Kept for comparison only (``split.by_patient: false``): the same algorithm as
    :func:`split_by_patient` with every image its own item. Images are ordered by name before
    the seeded shuffle, so the result does not depend on row order.
    """
    fractions = check_fractions(fractions)
    rng = np.random.default_rng(_check_seed(seed))
    labels = _check_table(df, [IMAGE_INDEX])
    order = np.argsort(df[IMAGE_INDEX].to_numpy(dtype=str), kind="stable")
    names = np.empty(len(df), dtype=object)
    names[order] = _three_way(labels[order] > 0, labels[order], np.ones(len(df), np.int64),
                              fractions, rng)
    return _as_series(names, df, fractions)


def _examples(names: Iterable[str]) -> str:
    names = sorted(names)
    more = f" and {len(names) - _EXAMPLES} more" if len(names) > _EXAMPLES else ""
    return ", ".join(names[:_EXAMPLES]) + more


def split_official(df: pd.DataFrame, train_val_names: Iterable[str], test_names: Iterable[str],
                   val_fraction: float = 0.1, seed: int = 0) -> pd.Series:
    """NIH's official lists (``train_val_list.txt``, ``test_list.txt``), val carved by patient.

    ``val_fraction`` is the share of the train_val *images* to move to val (stratified at
    patient level like :func:`split_by_patient`). Every image of ``df`` must be in one list;
    list names that are not in ``df`` (``df`` may be a sample) are counted, logged and stored
    in ``result.attrs['not_in_table']``.
    """
    check_fraction(val_fraction, "val_fraction", include_boundaries="left", type_error=ValueError)
    rng = np.random.default_rng(_check_seed(seed))
    labels = _check_table(df, [IMAGE_INDEX, PATIENT_ID])
    train_val, test = set(train_val_names), set(test_names)
    both = train_val & test
    if both:
        raise ValueError(f"{len(both)} images are in both the train_val and the test list, "
                         f"e.g. {_examples(both)}")
    names = df[IMAGE_INDEX].astype(str)
    in_test = names.isin(test).to_numpy()
    in_train_val = names.isin(train_val).to_numpy()
    neither = ~(in_test | in_train_val)
    if neither.any():
        raise ValueError(f"{int(neither.sum())} images of df are in neither official list, "
                         f"e.g. {_examples(names[neither])}")
    present = set(names)
    not_in_table = {"train_val": len(train_val - present), "test": len(test - present)}
    if any(not_in_table.values()):
        logger.info("official list names not in the table (a sample?): %s", not_in_table)

    split_names = np.where(in_test, "test", "train").astype(object)
    if val_fraction > 0 and in_train_val.any():
        rows = np.flatnonzero(in_train_val)
        carved = _patient_names(df.iloc[rows], labels[rows],
                                (1 - val_fraction, val_fraction, 0.0), rng)
        split_names[rows] = carved
    # Test may be empty (a sample can miss it), train may not; val only if asked for.
    split = _as_series(split_names, df, (1.0, float(val_fraction), 0.0))
    split.attrs["not_in_table"] = not_in_table
    return split


# ---------------------------------------------------------------------------------------------
# Summary for metrics/split.json
# ---------------------------------------------------------------------------------------------


def _rounded(value: float) -> float:
    return round(float(value), _DIGITS)


def _overlap(patients: pd.Series, split: pd.Series, first: str, second: str) -> dict:
    """Patients in both splits, and the share of ``second``'s images whose patient is in
    ``first`` (for train/test: how much of the test set the model has effectively seen)."""
    first_patients = set(patients[split == first])
    second_rows = patients[split == second]
    shared = first_patients & set(second_rows)
    sharing = second_rows.isin(first_patients).mean() if len(second_rows) else 0.0
    return {"shared_patients": len(shared),
            f"{second}_images_with_patient_in_{first}": _rounded(sharing)}


def split_summary(df: pd.DataFrame, split: pd.Series, *, seed: int = 0,
                  fractions=None) -> dict:
    """JSON-ready description of a split, stable key order, floats rounded to 6 digits.

    ``leak_if_image_level`` re-splits ``df`` at image level with ``seed`` and ``fractions``
    (default: the realised image fractions of ``split``) and reports how much of that test set
    would share patients with train: the figure that motivates splitting by patient.
    """
    labels = _check_table(df, [PATIENT_ID, IMAGE_INDEX])
    if not split.index.equals(df.index):
        raise ValueError("split must be indexed like df (use the Series the split returned)")
    unknown = set(split.unique()) - set(SPLITS)
    if unknown:
        raise ValueError(f"split values must be in {list(SPLITS)}, got {sorted(unknown)}")
    values = split.to_numpy(dtype=str)
    patients = df[PATIENT_ID]
    n_images = len(df)

    splits = {}
    for name in SPLITS:
        mask = values == name
        images = int(mask.sum())
        positives = labels[mask].sum(axis=0)
        splits[name] = {
            "images": images,
            "patients": int(patients[mask].nunique()),
            "image_fraction": _rounded(images / n_images),
            "positives": {label: int(p) for label, p in zip(LABELS, positives, strict=True)},
            "prevalence": {label: _rounded(p / images if images else 0.0)
                           for label, p in zip(LABELS, positives, strict=True)},
        }
    overlap = {f"{a}-{b}": _overlap(patients, split, a, b)
               for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}

    if fractions is None:
        fractions = [splits[name]["images"] / n_images for name in SPLITS]
    image_level = split_by_image(df, fractions, seed)
    leak = _overlap(patients, image_level, "train", "test")
    return {
        "images": n_images,
        "patients": int(patients.nunique()),
        "splits": splits,
        "patient_overlap": overlap,
        "leak_if_image_level": leak,
    }
