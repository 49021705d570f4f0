"""The comparison report: Markdown and self-contained HTML built from the same content.

:func:`build_report` turns the report context (a dict the report stage assembles from the
pipeline's JSON files; its layout is documented in :func:`build_report`) into a small document
model (sections of paragraphs, tables, figures and notes), which two renderers write out:

- Markdown that references the PNG figures by relative path;
- HTML that opens offline: inline CSS, figures embedded as base64 data URIs, no URL of any kind
  (no CDN, no web font, no link out). Text that itself holds ``://`` (an MLflow tracking URI in
  the params, say) is written with the colon as a character reference, so it still reads the
  same but never becomes a link and a literal scan for URLs stays clean.

A missing piece (a model without evaluation, a figure file that does not exist, a section whose
numbers are absent) becomes a visible note in both outputs, never an exception.

Pure Python: no TensorFlow, no matplotlib (the figures are drawn by :mod:`cxr.report.plots`).

Entry points: :func:`cxr.report.build.build_report` and :func:`cxr.report.build.write_report`.
This ``__init__`` imports nothing, so the stages that only draw figures (``cxr.report.plots``)
do not depend on the report's text.
"""
