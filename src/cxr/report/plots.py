"""The report's figures as PNG files: ROC curves, loss curves, MC-dropout histograms,
reliability diagrams, referral curves and a per-finding AUC comparison.

Pure matplotlib / numpy (no TensorFlow, no pyplot): each function builds its own
:class:`~matplotlib.figure.Figure` on an Agg canvas, so nothing depends on the display, on a
global backend or on pyplot's figure registry, and figures never leak between calls.

Every finding keeps one colour and line style in every figure (:func:`class_style`), and every
model one colour (:func:`model_color`), so the figures of one report read together.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cxr.labels import LABELS

DPI = 110

# 14 colours that stay apart on screen and in print; the second half of the findings is also
# dashed, so neighbours in the legend differ in two ways.
_CLASS_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#843c39",
)
MODEL_COLORS: dict[str, str] = {
    "simple_cnn": "#7f7f7f",
    "densenet121": "#1f77b4",
    "efficientnetb0": "#2ca02c",
    "fusion": "#d62728",
}
_SPARE_MODEL_COLORS = ("#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def class_style(label: str) -> dict:
    """Colour and line style of a finding, the same in every figure."""
    if label in LABELS:
        index = LABELS.index(label)
    else:  # a finding outside the 14 still gets a stable style
        index = zlib.crc32(label.encode()) % len(_CLASS_COLORS)
    return {"color": _CLASS_COLORS[index], "linestyle": "-" if index < 7 else "--"}


def model_color(name: str) -> str:
    """Colour of a model, the same in every figure."""
    if name in MODEL_COLORS:
        return MODEL_COLORS[name]
    return _SPARE_MODEL_COLORS[zlib.crc32(name.encode()) % len(_SPARE_MODEL_COLORS)]


def _series_color(name: str) -> str:
    """Curves keyed by finding or by model (reliability diagrams take either)."""
    return class_style(name)["color"] if name in LABELS else model_color(name)


# ---------------------------------------------------------------------------------------------
# ROC curves (Figure 5)


def roc_curve_points(y_true, y_score) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(fpr, tpr, auc) of one class; (empty, empty, None) without positives or negatives.

    Tied scores form one step (a diagonal segment), so the trapezoid area equals the
    Mann-Whitney AUC that ``cxr.evaluation`` and scikit-learn report.
    """
    y_true = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    positives = int(y_true.sum())
    negatives = len(y_true) - positives
    if positives == 0 or negatives == 0:
        return np.empty(0), np.empty(0), None
    order = np.argsort(-y_score, kind="mergesort")
    score_sorted, true_sorted = y_score[order], y_true[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(score_sorted)), len(score_sorted) - 1]
    true_positives = np.cumsum(true_sorted)[last_of_each_score]
    false_positives = last_of_each_score + 1 - true_positives
    tpr = np.r_[0.0, true_positives / positives]
    fpr = np.r_[0.0, false_positives / negatives]
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    return fpr, tpr, auc


def roc_curves(y_true, y_score, labels: Sequence[str], title: str, path) -> Path:
    """One model's per-class ROC curves in one figure, per-class AUC in the legend.

    ``y_true`` is 0/1 of shape (n_images, n_labels), ``y_score`` the probabilities of the
    same shape. A class without positives (or negatives) has no curve and reads "n/a".
    """
    labels = list(labels)
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    expected = (len(y_true), len(labels))
    if y_true.ndim != 2 or y_true.shape[1] != len(labels):
        raise ValueError(f"y_true has shape {y_true.shape}; expected (n_images, {len(labels)}) "
                         f"for the {len(labels)} labels given")
    if y_score.shape != expected:
        raise ValueError(f"y_score has shape {y_score.shape}; expected {expected} like y_true")
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold only 0 and 1")

    figure, axes = _figure(figsize=(10.5, 7.0))
    axis = axes[0]
    aucs = []
    for index, label in enumerate(labels):
        column = y_true[:, index]
        fpr, tpr, auc = roc_curve_points(column, y_score[:, index])
        style = class_style(label)
        if auc is None:
            reason = "no positives" if column.sum() == 0 else "no negatives"
            axis.plot([], [], color=style["color"], linestyle=":",
                      label=f"{label}: n/a ({reason})")
            continue
        aucs.append(auc)
        axis.plot(fpr, tpr, linewidth=1.6, **style,
                  label=f"{label}: {auc:.3f} ({int(column.sum())} pos.)")
    axis.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1, label="chance: 0.500")
    macro = f"macro AUC {np.mean(aucs):.3f} over {len(aucs)} of {len(labels)} findings" \
        if aucs else "no finding has both positives and negatives"
    axis.set_title(f"{title}\n{macro}, {len(y_true)} images", fontsize=12)
    axis.set_xlabel("False positive rate (1 - specificity)")
    axis.set_ylabel("True positive rate (sensitivity)")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.01)
    axis.set_aspect("equal")
    axis.grid(alpha=0.3)
    axis.legend(title="Finding: AUC", loc="center left", bbox_to_anchor=(1.02, 0.5),
                fontsize=9, title_fontsize=10, frameon=False)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Loss curves (Figure 6)


def loss_curves(history_rows: Sequence[Mapping], title: str, path) -> Path:
    """Train vs validation loss per epoch, and AUC on a second panel; phases shaded.

    Rows are dicts with ``step`` (global epoch number; ``epoch`` is accepted instead),
    ``phase``, ``loss``, ``val_loss``, ``auc``, ``val_auc``; a missing or None value leaves a
    gap. The best validation AUC is marked.
    """
    rows = list(history_rows)
    if not rows:
        raise ValueError("history_rows is empty; expected one dict per epoch with keys "
                         "step, phase, loss, val_loss, auc, val_auc")
    for number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"history_rows[{number}] is {type(row).__name__}; expected a dict")
    steps = np.array([_number(row.get("step", row.get("epoch", i + 1)))
                      for i, row in enumerate(rows)], dtype=float)
    phases = [str(row.get("phase", "")) for row in rows]

    figure, axes = _figure(nrows=2, figsize=(10, 7.5), sharex=True)
    panels = (("loss", "Loss", axes[0]), ("auc", "Macro ROC-AUC", axes[1]))
    for key, name, axis in panels:
        train = np.array([_number(row.get(key)) for row in rows], dtype=float)
        val = np.array([_number(row.get(f"val_{key}")) for row in rows], dtype=float)
        if np.isnan(train).all() and np.isnan(val).all():
            axis.text(0.5, 0.5, f"no {name.lower()} recorded", ha="center", va="center",
                      transform=axis.transAxes, color="#666666")
        axis.plot(steps, train, marker="o", markersize=3.5, color="#1f77b4", label="train")
        axis.plot(steps, val, marker="s", markersize=3.5, color="#d62728", label="validation")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        if key == "auc" and not np.isnan(val).all():
            best = int(np.nanargmax(val))
            axis.plot(steps[best], val[best], marker="*", markersize=14, color="#d62728",
                      linestyle="none", label=f"best validation: {val[best]:.3f}")
        axis.legend(loc="best", fontsize=9)
    _shade_phases(axes, steps, phases)
    axes[1].set_xlabel("Epoch (both phases counted)")
    axes[0].set_title(title, fontsize=12, pad=18)  # room for the phase names above the panel
    return _save(figure, path)


def _shade_phases(axes, steps: np.ndarray, phases: list[str]) -> None:
    """Alternate light bands per phase, a dashed line at each change, the name on top."""
    spans, start = [], 0
    for index in range(1, len(phases) + 1):
        if index == len(phases) or phases[index] != phases[start]:
            spans.append((phases[start], start, index - 1))
            start = index
    for number, (phase, first, last) in enumerate(spans):
        left = steps[first] - 0.5
        right = steps[last] + 0.5
        for axis in axes:
            if number % 2:
                axis.axvspan(left, right, color="#000000", alpha=0.05, linewidth=0)
            if number:
                axis.axvline(left, color="#444444", linestyle="--", linewidth=1)
        if phase:
            axes[0].text((left + right) / 2, 1.01, f"phase: {phase}", ha="center", va="bottom",
                         fontsize=9, color="#444444",
                         transform=axes[0].get_xaxis_transform())


# ---------------------------------------------------------------------------------------------
# MC-dropout histogram (Figure 7)


def mc_histogram(samples, labels: Sequence[str], title: str, path, top: int = 4) -> Path:
    """For one test image: histograms of the T MC-dropout probabilities of its ``top``
    findings (highest mean), each with mean and mean ± std marked.

    ``samples`` has shape (T, n_labels): one row per stochastic forward pass.
    """
    labels = list(labels)
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != len(labels) or samples.shape[0] < 1:
        raise ValueError(f"samples has shape {samples.shape}; expected (T passes, {len(labels)}) "
                         f"for the {len(labels)} labels given")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    top = min(top, len(labels))
    means, stds = samples.mean(axis=0), samples.std(axis=0)
    chosen = np.argsort(-means, kind="mergesort")[:top]

    ncols = 1 if top == 1 else 2
    nrows = math.ceil(top / ncols)
    figure, axes = _figure(nrows=nrows, ncols=ncols, figsize=(5.0 * ncols, 3.3 * nrows + 0.8))
    for axis, index in zip(axes, chosen, strict=False):
        label, mean, std = labels[index], means[index], stds[index]
        color = class_style(label)["color"]
        half_width = max(3.5 * std, 0.03)
        low, high = max(0.0, mean - half_width), min(1.0, mean + half_width)
        axis.hist(samples[:, index], bins=15, range=(low, high), color=color, alpha=0.75,
                  edgecolor="white")
        axis.axvspan(mean - std, mean + std, color=color, alpha=0.15,
                     label=f"mean ± std: {mean:.3f} ± {std:.3f}")
        axis.axvline(mean, color="black", linewidth=1.5)
        axis.set_xlim(low, high)
        axis.set_title(label, fontsize=11)
        axis.set_xlabel("Predicted probability")
        axis.set_ylabel("Passes")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize=8.5)
    for axis in axes[top:]:
        axis.set_visible(False)
    figure.suptitle(f"{title}\n{samples.shape[0]} MC-dropout passes, top {top} findings by mean",
                    fontsize=12)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Reliability diagram


def reliability_diagram(curves: Mapping[str, Mapping], title: str, path) -> Path:
    """Observed fraction of positives vs mean predicted probability per bin, with the
    diagonal of perfect calibration; bin counts on a lower panel.

    ``curves`` maps a model (or a finding) to ``{"bin_mean_prob": [...],
    "bin_fraction_positive": [...], "bin_count": [...]}``; empty bins (count 0 or None
    values) are skipped.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict {name: {bin_mean_prob, "
                         "bin_fraction_positive, bin_count}}")
    many = len(curves) > 6  # a legend that would cover the curves goes to the right
    figure, axes = _figure(nrows=2, figsize=(10.5 if many else 8.5, 7.5), height_ratios=(3, 1),
                           sharex=True)
    axis, count_axis = axes
    axis.plot([0, 1], [0, 1], color="black", linestyle=":", linewidth=1,
              label="perfect calibration")
    for name, curve in curves.items():
        mean_prob, fraction, count = _reliability_bins(name, curve)
        color = _series_color(name)
        linestyle = class_style(name)["linestyle"] if name in LABELS else "-"
        if len(mean_prob) == 0:
            axis.plot([], [], color=color, label=f"{name} (no populated bin)")
            continue
        axis.plot(mean_prob, fraction, marker="o", markersize=4.5, color=color,
                  linestyle=linestyle, label=f"{name} ({int(count.sum())} predictions)")
        count_axis.plot(mean_prob, count, marker="o", markersize=3.5, color=color,
                        linestyle=linestyle)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_ylabel("Observed fraction positive")
    axis.set_title(title, fontsize=12)
    axis.grid(alpha=0.3)
    if many:
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9, frameon=False)
    else:
        axis.legend(loc="upper left", fontsize=9)
    count_axis.set_yscale("log")
    count_axis.set_ylabel("Predictions\nper bin")
    count_axis.set_xlabel("Mean predicted probability in bin")
    count_axis.grid(alpha=0.3)
    return _save(figure, path)


def _reliability_bins(name: str, curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = ("bin_mean_prob", "bin_fraction_positive", "bin_count")
    if not isinstance(curve, Mapping) or any(key not in curve for key in keys):
        raise ValueError(f"curves[{name!r}] must be a dict with keys {', '.join(keys)}")
    columns = [np.array([_number(v) for v in curve[key]], dtype=float) for key in keys]
    if len({len(column) for column in columns}) != 1:
        raise ValueError(f"curves[{name!r}]: {', '.join(keys)} must have the same length, got "
                         f"{[len(column) for column in columns]}")
    mean_prob, fraction, count = columns
    keep = ~(np.isnan(mean_prob) | np.isnan(fraction) | np.isnan(count)) & (count > 0)
    return mean_prob[keep], fraction[keep], count[keep]


# ---------------------------------------------------------------------------------------------
# Referral curves


def referral_curves(curves: Mapping[str, Sequence[Mapping]], title: str, path,
                    mark_fraction: float = 0.2) -> Path:
    """Macro AUC on the images kept vs the fraction referred (most uncertain first).

    ``curves`` maps a model to its points ``[{"referred_fraction", "macro_auc", ...}]``;
    a point whose macro AUC is None is skipped. A dotted line marks ``mark_fraction``.
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict {model: [{referred_fraction, "
                         "macro_auc}, ...]}")
    figure, axes = _figure(figsize=(9, 6))
    axis = axes[0]
    for name, points in curves.items():
        if isinstance(points, Mapping) or not isinstance(points, Sequence):
            raise ValueError(f"curves[{name!r}] must be a list of points, "
                             f"got {type(points).__name__}")
        pairs = sorted((_number(p.get("referred_fraction")), _number(p.get("macro_auc")))
                       for p in points)
        pairs = [(x, y) for x, y in pairs if not (math.isnan(x) or math.isnan(y))]
        if not pairs:
            axis.plot([], [], color=model_color(name), label=f"{name} (no points)")
            continue
        fractions, aucs = np.array(pairs).T
        axis.plot(fractions * 100, aucs, marker="o", markersize=4, color=model_color(name),
                  label=f"{name}: {aucs[0]:.3f} → {aucs[-1]:.3f}")
    axis.axvline(mark_fraction * 100, color="#444444", linestyle=":", linewidth=1,
                 label=f"{mark_fraction:.0%} referred")
    axis.set_xlim(left=0)
    axis.set_xlabel("Images referred to a radiologist (%), most uncertain first")
    axis.set_ylabel("Macro ROC-AUC on the images kept")
    axis.set_title(title, fontsize=12)
    axis.grid(alpha=0.3)
    axis.legend(loc="best", fontsize=9)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# AUC comparison


def auc_comparison(table: Mapping[str, Mapping[str, float | None]], path,
                   title: str = "Test ROC-AUC per finding and model") -> Path:
    """Grouped bars: one group per finding, one bar per model; "n/a" where a model has none.

    ``table`` maps a model to ``{finding: auc or None}``. Findings follow the canonical order,
    then any other keys (e.g. a macro entry) in order of appearance.
    """
    if not isinstance(table, Mapping) or not table:
        raise ValueError("table must be a non-empty dict {model: {finding: auc or None}}")
    for name, row in table.items():
        if not isinstance(row, Mapping):
            raise ValueError(f"table[{name!r}] must be a dict {{finding: auc}}, "
                             f"got {type(row).__name__}")
    present = {label for row in table.values() for label in row}
    findings = [label for label in LABELS if label in present]
    findings += [label for row in table.values() for label in row
                 if label not in LABELS and label not in findings]
    findings = list(dict.fromkeys(findings))

    models = list(table)
    width = 0.8 / len(models)
    positions = np.arange(len(findings))
    figure, axes = _figure(figsize=(max(9.0, 0.85 * len(findings) + 2.5), 5.8))
    axis = axes[0]
    for number, name in enumerate(models):
        offsets = positions - 0.4 + width * (number + 0.5)
        values = np.array([_number(table[name].get(label)) for label in findings], dtype=float)
        axis.bar(offsets, np.nan_to_num(values), width=width * 0.95, color=model_color(name),
                 label=name)
        for x, value in zip(offsets, values, strict=True):
            if np.isnan(value):
                axis.text(x, 0.01, "n/a", rotation=90, ha="center", va="bottom", fontsize=7,
                          color="#444444")
    axis.axhline(0.5, color="black", linestyle=":", linewidth=1, label="chance")
    axis.set_xticks(positions, [label.replace("_", " ") for label in findings], rotation=35,
                    ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel("Test ROC-AUC")
    axis.set_title(title, fontsize=12)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncols=len(models) + 1,
                frameon=False, fontsize=9)
    return _save(figure, path)


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _figure(nrows: int = 1, ncols: int = 1, figsize=(8, 6), sharex: bool = False,
            height_ratios=None):
    """A Figure on its own Agg canvas (no pyplot state) and its axes as a flat list."""
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.subplots(nrows, ncols, sharex=sharex, squeeze=False,
                           gridspec_kw={"height_ratios": height_ratios} if height_ratios else None)
    return figure, list(grid.ravel())


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" tag: the same inputs give the same bytes across matplotlib patch releases,
    # so DVC does not see a changed output.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _number(value) -> float:
    """float, with None / non-numbers as NaN (a gap in the plot)."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
