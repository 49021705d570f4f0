"""The report's subgroup section and figure: macro AUC and underdiagnosis per sex, view
position and age band, every model side by side, from the ``subgroups`` block of each model's
eval metrics (:mod:`cxr.evaluation.subgroups`).

The tables and sentences here are built from the numbers only; :func:`subgroup_figure` draws
the one figure (matplotlib, no pyplot, like :mod:`cxr.report.plots`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cxr.report.document import (
    MISSING,
    Cell,
    Figure,
    Paragraph,
    Subheading,
    Table,
    Text,
    display_name,
)
from cxr.report.formatting import _absent_notes, _get, _int, _models, _num, _percent, _signed
from cxr.report.plots import _figure, _save, model_color

AXIS_NAMES = {"sex": "Sex", "view": "View position", "age": "Age band"}
METRIC_NAMES = {"macro_auc": "macro AUC", "underdiagnosis": "underdiagnosis rate"}
TOO_SMALL = "too_small"


# ---------------------------------------------------------------------------------------------
# Reading the audits


def _audits(context) -> dict[str, Mapping]:
    """{model: its audit} for the models whose eval metrics hold one."""
    audits = {name: _get(context, "models", name, "eval", "subgroups")
              for name in _models(context)}
    return {name: audit for name, audit in audits.items()
            if isinstance(audit, Mapping) and isinstance(audit.get("axes"), Mapping)}


def _group_rows(audits: Mapping[str, Mapping]) -> list[tuple[str, str]]:
    """(axis, group) in report order: the axes and groups as the first audit lists them."""
    rows: list[tuple[str, str]] = []
    for audit in audits.values():
        for axis, block in audit["axes"].items():
            for group in (_get(block, "groups") or {}):
                if (axis, group) not in rows:
                    rows.append((axis, group))
    return rows


def _interval(entry, metric: str, percent: bool = False) -> str:
    value = _num(_get(entry, metric))
    if value is None:
        return MISSING
    low, high = _num(_get(entry, f"{metric}_ci_low")), _num(_get(entry, f"{metric}_ci_high"))
    if percent:
        text = _percent(value)
        return text + ("" if low is None or high is None
                       else f"\n({low * 100:.1f}–{high * 100:.1f})")
    return f"{value:.3f}" + ("" if low is None or high is None else f"\n({low:.3f}–{high:.3f})")


def _cell(entry, metric: str) -> str:
    if _get(entry, "status") == TOO_SMALL:
        images = _num(_get(entry, "images"))
        return f"too small ({_int(images)} image{'' if images == 1 else 's'})"
    return _interval(entry, metric, percent=metric == "underdiagnosis")


def gap_sentences(audits: Mapping[str, Mapping],
                  name_models: bool = True) -> tuple[list[str], list[str]]:
    """(gaps whose interval excludes 0, gaps whose interval covers 0), each a short phrase
    (led by the model's name unless ``name_models`` is False)."""
    beyond, within = [], []
    for name, audit in audits.items():
        for axis, block in audit["axes"].items():
            for metric, gap in (_get(block, "gaps") or {}).items():
                if not isinstance(gap, Mapping) or _num(gap.get("difference")) is None:
                    continue
                scale, unit = (100, " points") if metric == "underdiagnosis" else (1, "")
                low, high = _num(gap.get("ci_low")), _num(gap.get("ci_high"))
                ci = ("" if low is None or high is None else
                      f" (CI {_signed(low * scale, 3 if scale == 1 else 1)} to "
                      f"{_signed(high * scale, 3 if scale == 1 else 1)})")
                phrase = ((f"{display_name(name)}, " if name_models else "")
                          + f"{AXIS_NAMES.get(axis, axis).lower()} "
                          f"{gap.get('group')} against the rest: {METRIC_NAMES.get(metric, metric)} "
                          f"{_signed(gap['difference'] * scale, 3 if scale == 1 else 1)}{unit}{ci}")
                (beyond if gap.get("ci_excludes_zero") else within).append(phrase)
    return beyond, within


def too_small_groups(audits: Mapping[str, Mapping]) -> list[str]:
    """'Age band 0-20 (12 images)' for every group some audit calls too small."""
    seen: dict[tuple[str, str], str] = {}
    for audit in audits.values():
        for axis, block in audit["axes"].items():
            for group, entry in (_get(block, "groups") or {}).items():
                if _get(entry, "status") == TOO_SMALL and (axis, group) not in seen:
                    images = _num(entry.get("images"))
                    seen[(axis, group)] = (f"{AXIS_NAMES.get(axis, axis).lower()} {group} "
                                           f"({_int(images)} image{'' if images == 1 else 's'}, "
                                           f"{_int(entry.get('abnormal_images'))} with a finding)")
    return list(seen.values())


# ---------------------------------------------------------------------------------------------
# Section


def phantom_caveat(source) -> str | None:
    """What a subgroup gap can mean on the phantoms (None for other data)."""
    if source != "phantoms":
        return None
    return ("These are phantom images: the generator draws findings independently of sex, age "
            "and view, so it plants no subgroup effect in the labels. A sex or age gap here is "
            "noise or a bug. Only the view can differ for a reason: AP films are drawn with AP "
            "geometry and more noise, as portable films are.")


def subgroup_table(audits: Mapping[str, Mapping]) -> Table:
    """One row per group, for each model its macro AUC and underdiagnosis with 95% CIs."""
    first = next(iter(audits.values()))
    rows = []
    for axis, group in _group_rows(audits):
        entry = _get(first, "axes", axis, "groups", group)
        row = [AXIS_NAMES.get(axis, axis), Cell(str(group), bold=True),
               _int(_get(entry, "images")), _int(_get(entry, "patients"))]
        for audit in audits.values():
            entry = _get(audit, "axes", axis, "groups", group)
            row += [_cell(entry, "macro_auc"), _cell(entry, "underdiagnosis")]
        rows.append(row)
    columns = ["Axis", "Group", "Images", "Patients"]
    for name in audits:
        columns += [f"{display_name(name)}: macro AUC", f"{display_name(name)}: underdiagnosis"]
    settings = first.get("settings") or {}
    footnotes = [["Underdiagnosis: the share of the group's images with at least one finding "
                  "that the model calls \"No Finding\" (no finding at or above its operating "
                  "threshold). In brackets: 95% patient-bootstrap interval."],
                 [f"Too small: fewer than {_int(settings.get('min_images'))} images, or fewer "
                  f"than {_int(settings.get('min_positives'))} with a finding; no number is "
                  "shown for them."]]
    return Table(columns, rows, footnotes=footnotes,
                 groups=[("", 4)] + [(display_name(name), 2) for name in audits])


def gap_table(audits: Mapping[str, Mapping]) -> Table:
    """Per model and axis, the largest gap of a group against the rest, per metric."""
    rows = []
    for name, audit in audits.items():
        for axis, block in audit["axes"].items():
            for metric, gap in (_get(block, "gaps") or {}).items():
                scale = 100 if metric == "underdiagnosis" else 1
                digits = 1 if scale == 100 else 3
                if not isinstance(gap, Mapping):
                    rows.append([display_name(name), AXIS_NAMES.get(axis, axis),
                                 METRIC_NAMES.get(metric, metric), MISSING, MISSING, MISSING,
                                 "no group and rest both large enough"])
                    continue
                low, high = _num(gap.get("ci_low")), _num(gap.get("ci_high"))
                rows.append([
                    display_name(name), AXIS_NAMES.get(axis, axis), METRIC_NAMES.get(metric, metric),
                    str(gap.get("group")),
                    _signed(_num(gap.get("difference")) * scale, digits)
                    if _num(gap.get("difference")) is not None else MISSING,
                    MISSING if low is None or high is None else
                    f"{_signed(low * scale, digits)} to {_signed(high * scale, digits)}",
                    Cell("yes", bold=True) if gap.get("ci_excludes_zero") else "no"])
    return Table(["Model", "Axis", "Metric", "Group", "Group − rest", "95% CI",
                  "Beyond its CI"], rows,
                 footnotes=[["Underdiagnosis gaps in percentage points. The group shown is the "
                             "one whose gap to the rest of the test split is largest; the "
                             "interval is paired (the same patient resamples for the group and "
                             "the rest)."]])


def subgroup_section(context) -> list:
    """The report section: how to read it, the phantom caveat, the tables, the reading, the
    figure."""
    blocks: list = [Paragraph([
        "Do the models serve every group alike? Published audits of chest X-ray classifiers "
        "(Seyyed-Kalantari et al., CheXclusion 2021 and Nature Medicine 2021) found lower true "
        "positive rates and more ", Text("underdiagnosis", bold=True), " (a patient with a "
        "finding called \"No Finding\") for some sexes and ages. Per group of the test split: "
        "macro AUC and underdiagnosis rate at the operating thresholds, with 95% "
        "patient-bootstrap intervals; per axis, the largest gap of a group against the rest."])]
    caveat = phantom_caveat(_get(context, "data", "source"))
    if caveat:  # a fact about the data, not a gap in the report: a paragraph, not a note
        blocks.append(Paragraph([Text("Phantom data.", bold=True), " ", caveat]))
    audits = _audits(context)
    blocks += _absent_notes(_models(context), audits, "subgroup audit",
                            "the subgroups key of metrics/eval/NAME.json")
    if not audits:
        return blocks
    blocks.append(subgroup_table(audits))
    blocks.append(Subheading("Largest gaps"))
    blocks.append(gap_table(audits))
    blocks.append(Paragraph(subgroup_reading(audits)))
    blocks.append(Figure(_get(context, "figures", "subgroups"),
                         "Macro AUC and underdiagnosis per group with 95% CIs, all models"))
    return blocks


def subgroup_reading(audits: Mapping[str, Mapping]) -> list:
    """The plain-words reading: which gaps are beyond their CI, which groups were too small."""
    beyond, within = gap_sentences(audits)
    parts: list = []
    if beyond:
        parts.append("Beyond their 95% CI (the interval of the difference excludes 0): "
                     + "; ".join(beyond) + ". ")
    else:
        parts.append("No largest gap is beyond its 95% CI: every interval of a difference "
                     "covers 0. ")
    if within:
        parts.append(f"{len(within)} other largest gap{'s' if len(within) != 1 else ''} "
                     f"{'are' if len(within) != 1 else 'is'} within "
                     f"{'their' if len(within) != 1 else 'its'} CI. ")
    small = too_small_groups(audits)
    parts.append("Too small to say anything: " + "; ".join(small) + "."
                 if small else "Every group is large enough to be reported.")
    return parts


# ---------------------------------------------------------------------------------------------
# Figure


def subgroup_figure(audits: Mapping[str, Mapping], path,
                    title: str = "Subgroups of the test split") -> Path:
    """Two panels (macro AUC, underdiagnosis), one point per group and model with its 95% CI;
    a too-small group is marked instead of drawn."""
    if not isinstance(audits, Mapping) or not audits:
        raise ValueError("audits must be a non-empty dict {model: subgroup audit}")
    rows = _group_rows(audits)
    if not rows:
        raise ValueError("the audits hold no groups")
    positions = np.arange(len(rows))
    figure, axes = _figure(2, 1, figsize=(max(8.0, 0.75 * len(rows) + 2.5), 7.5), sharex=True)
    width = 0.7 / len(audits)
    for axis, metric, label in ((axes[0], "macro_auc", "Macro AUC"),
                                (axes[1], "underdiagnosis", "Underdiagnosis rate")):
        for number, (name, audit) in enumerate(audits.items()):
            xs, values, lows, highs, small = [], [], [], [], []
            for x, (axis_name, group) in zip(positions, rows, strict=True):
                offset = x - 0.35 + width * (number + 0.5)
                entry = _get(audit, "axes", axis_name, "groups", group)
                value = _num(_get(entry, metric))
                if _get(entry, "status") == TOO_SMALL or value is None:
                    small.append(offset)
                    continue
                low = _num(_get(entry, f"{metric}_ci_low"))
                high = _num(_get(entry, f"{metric}_ci_high"))
                xs.append(offset)
                values.append(value)
                lows.append(value - (value if low is None else low))
                highs.append((value if high is None else high) - value)
            axis.errorbar(xs, values, yerr=[lows, highs], fmt="o", capsize=3, markersize=4,
                          color=model_color(name), label=name)
            for x in small:
                axis.text(x, 0.02, "too small", rotation=90, ha="center", va="bottom",
                          fontsize=7, color="#444444", transform=axis.get_xaxis_transform())
        axis.set_ylabel(label)
        axis.grid(axis="y", alpha=0.3)
        for boundary in _axis_boundaries(rows):
            axis.axvline(boundary, color="#999999", linewidth=0.8)
    axes[0].set_title(title, fontsize=12)
    axes[1].set_xticks(positions, [f"{AXIS_NAMES.get(a, a)}: {g}" for a, g in rows],
                       rotation=35, ha="right")
    axes[0].legend(loc="lower left", fontsize=8, ncols=len(audits))
    return _save(figure, path)


def _axis_boundaries(rows: Sequence[tuple[str, str]]) -> list[float]:
    return [index - 0.5 for index in range(1, len(rows)) if rows[index][0] != rows[index - 1][0]]
