"""build_report / write_report: context -> sections -> Markdown and HTML."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from cxr.report.details import (
    _calibration,
    _localization,
    _provenance,
    _roc_curves,
    _training,
    _uncertainty,
)
from cxr.report.document import REPORT_HTML, REPORT_MD, SECTIONS, Note, Section
from cxr.report.headline import _data, _model_comparison, _summary, _test_auc
from cxr.report.html import _render_html
from cxr.report.markdown import _render_markdown
from cxr.report.model_card import model_cards_section
from cxr.report.subgroups import subgroup_section

# ---------------------------------------------------------------------------------------------
# Public API


def build_report(context: Mapping, markdown_dir=None,
                 progress: Callable[[str], None] | None = None) -> tuple[str, str]:
    """(markdown, html) of the comparison report.

    ``context`` keys: ``title``, ``generated`` (ISO timestamp), ``data`` ({``source``,
    ``split``: metrics/split.json}), ``models`` ({name: {``eval``: metrics/eval/NAME.json,
    ``train``: metrics/train/NAME.json, ``localize``: metrics/localize/NAME.json, ``figures``:
    {roc, loss, mc_histogram, reliability, localize}}}),
    ``comparisons`` ([{a, b, difference, ci_low, ci_high, p_value}]), ``figures`` ({referral,
    reliability, auc_comparison, subgroups}) and ``provenance`` ({git_commit, params (flat), mlflow_run_ids,
    dvc_exp_name}). Any of them may be missing.

    Figure paths are read relative to the working directory; the Markdown writes them relative
    to ``markdown_dir`` (where the .md file will live), or as given when it is None.
    ``progress`` (a line sink such as ``print``) hears how far embedding the figures got.
    """
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a dict, got {type(context).__name__}")
    title = str(context.get("title") or "Chest X-ray classifier comparison")
    generated = context.get("generated")
    sections = [_build_section(section_id, heading, context)
                for section_id, heading in SECTIONS]
    return (_render_markdown(title, generated, sections, markdown_dir),
            _render_html(title, generated, sections, progress))


def write_report(context: Mapping, out_dir,
                 progress: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``out_dir``; return their paths.
    ``progress``: as for :func:`build_report`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, page = build_report(context, markdown_dir=out_dir, progress=progress)
    md_path, html_path = out_dir / REPORT_MD, out_dir / REPORT_HTML
    md_path.write_text(markdown, encoding="utf-8")
    html_path.write_text(page, encoding="utf-8")
    return md_path, html_path


# ---------------------------------------------------------------------------------------------
# Sections


def _build_section(section_id: str, heading: str, context: Mapping) -> Section:
    builder = _BUILDERS[section_id]
    try:
        blocks = builder(context)
    except Exception as error:  # a malformed piece of context must not cost the whole report
        blocks = [Note([f"This section could not be built from the report context "
                        f"({type(error).__name__}: {error})."])]
    return Section(section_id, heading, blocks)


_BUILDERS = {
    "summary": _summary,
    "test-auc": _test_auc,
    "data": _data,
    "model-comparison": _model_comparison,
    "calibration": _calibration,
    "uncertainty": _uncertainty,
    "subgroups": subgroup_section,
    "localization": _localization,
    "training": _training,
    "roc-curves": _roc_curves,
    "model-cards": model_cards_section,
    "provenance": _provenance,
}
