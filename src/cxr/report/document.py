"""What a report is made of: the published reference figures, the section list, display names,
and the small document model (paragraphs, notes, tables, figures) both renderers understand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr.models.registry import display_name  # noqa: F401  (re-exported for the sections)

# The published study's test results on real NIH ChestX-ray14, shown beside ours as reference.
# "auc" holds the per-class test AUCs of the study's Table 2, {model: {finding: auc}}. They are
# deliberately empty: the figures were not at hand when this was written and none may be
# invented. Fill them in from the paper and the report shows them; until then those cells read
# "—" with a footnote.
PUBLISHED_STUDY: dict = {
    "models": ("simple_cnn", "densenet121", "efficientnetb0", "fusion"),
    "macro_auc": {
        "simple_cnn": 0.6558,
        "densenet121": 0.7096,
        "efficientnetb0": 0.7363,
        "fusion": 0.8156,
    },
    "auc": {"simple_cnn": {}, "densenet121": {}, "efficientnetb0": {}, "fusion": {}},
}
PUBLISHED_LABEL_NIH = "Published study (real NIH data)"
PUBLISHED_LABEL_PHANTOMS = "Published study (real NIH data; not comparable to phantom results)"
PUBLISHED_MARK = "†"

# (anchor id, heading), in report order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("test-auc", "Test AUC per finding (the study's Table 2 layout)"),
    ("data", "Data"),
    ("model-comparison", "Model comparison"),
    ("calibration", "Calibration"),
    ("uncertainty", "Uncertainty"),
    ("localization", "Localization: do the Grad-CAM heatmaps point at the lesion?"),
    ("training", "Training"),
    ("roc-curves", "ROC curves"),
    ("provenance", "Provenance"),
)
MACRO_ROW = "Macro AUC (95% CI)"
MISSING = "—"
REPORT_MD, REPORT_HTML = "report.md", "report.html"


def published_label(source: str | None) -> str:
    """Heading of the published columns: only real NIH data makes them comparable."""
    return PUBLISHED_LABEL_NIH if source == "nih" else PUBLISHED_LABEL_PHANTOMS


# ---------------------------------------------------------------------------------------------
# Document model: what both renderers understand.


@dataclass
class Text:
    """A run of inline text; plain ``str`` is the same with no styling."""
    text: str
    bold: bool = False
    code: bool = False


@dataclass
class Paragraph:
    parts: list


@dataclass
class Note:
    """A visible remark about something missing or suspicious."""
    parts: list


@dataclass
class Subheading:
    text: str


@dataclass
class Bullets:
    items: list  # each item: a list of inline parts


@dataclass
class Cell:
    text: str
    bold: bool = False


@dataclass
class Table:
    columns: list[str]
    rows: list[list]  # Cell or str
    caption: list = field(default_factory=list)
    footnotes: list = field(default_factory=list)  # each: a list of inline parts
    groups: list[tuple[str, int]] = field(default_factory=list)  # header groups, HTML colspan


@dataclass
class Figure:
    path: str | None
    caption: str


@dataclass
class Figures:
    items: list[Figure]


@dataclass
class Section:
    id: str
    title: str
    blocks: list
