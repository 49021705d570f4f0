"""What a report is made of: the published reference figures, the section list, display names,
and the small document model (paragraphs, notes, tables, figures) both renderers understand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cxr.models.registry import display_name  # noqa: F401  (re-exported for the sections)

# The published study's test results on real NIH ChestX-ray14, shown beside ours as reference:
# "auc" holds the per-class test AUCs of the study's Table 2, {model: {finding: auc}}
# (a model or finding missing here reads "—" with a footnote). The study's Table 2 (test ROC-AUC, real NIH data, its image-level split: 80.6% of such a
# split's test images have their patient in training, so not comparable to a patient split).
PUBLISHED_STUDY: dict = {
    "models": ("simple_cnn", "densenet121", "efficientnetb0", "fusion"),
    "macro_auc": {
        "simple_cnn": 0.6558,
        "densenet121": 0.7096,
        "efficientnetb0": 0.7363,
        "fusion": 0.8156,
    },
    "auc": {
        "simple_cnn": {
            "Atelectasis": 0.67, "Cardiomegaly": 0.68, "Consolidation": 0.69, "Edema": 0.79,
            "Effusion": 0.76, "Emphysema": 0.57, "Fibrosis": 0.59, "Hernia": 0.59,
            "Infiltration": 0.65, "Mass": 0.55, "Nodule": 0.59, "Pleural_Thickening": 0.65,
            "Pneumonia": 0.72, "Pneumothorax": 0.67,
        },
        "densenet121": {
            "Atelectasis": 0.71, "Cardiomegaly": 0.62, "Consolidation": 0.69, "Edema": 0.75,
            "Effusion": 0.85, "Emphysema": 0.77, "Fibrosis": 0.69, "Hernia": 0.68,
            "Infiltration": 0.62, "Mass": 0.68, "Nodule": 0.64, "Pleural_Thickening": 0.71,
            "Pneumonia": 0.73, "Pneumothorax": 0.79,
        },
        "efficientnetb0": {
            "Atelectasis": 0.76, "Cardiomegaly": 0.74, "Consolidation": 0.77, "Edema": 0.85,
            "Effusion": 0.85, "Emphysema": 0.77, "Fibrosis": 0.67, "Hernia": 0.53,
            "Infiltration": 0.67, "Mass": 0.68, "Nodule": 0.72, "Pleural_Thickening": 0.75,
            "Pneumonia": 0.74, "Pneumothorax": 0.8,
        },
        "fusion": {
            "Atelectasis": 0.79, "Cardiomegaly": 0.91, "Consolidation": 0.85, "Edema": 0.86,
            "Effusion": 0.86, "Emphysema": 0.93, "Fibrosis": 0.85, "Hernia": 0.94,
            "Infiltration": 0.68, "Mass": 0.82, "Nodule": 0.72, "Pleural_Thickening": 0.74,
            "Pneumonia": 0.65, "Pneumothorax": 0.83,
        },
    },
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
    ("subgroups", "Subgroups: sex, view position and age"),
    ("localization", "Localization: do the Grad-CAM heatmaps point at the lesion?"),
    ("training", "Training"),
    ("roc-curves", "ROC curves"),
    ("model-cards", "Model cards"),
    ("provenance", "Provenance"),
)
MACRO_ROW = "Macro AUC (95% CI)"
MISSING = "—"
REPORT_MD, REPORT_HTML = "report.md", "report.html"


PUBLISHED_LABEL_NOT_STUDY = ("Published study (real NIH data; not comparable: this run differs "
                             "from the study in data, size, weights or epochs)")


def published_label(source: str | None, comparable: bool = False) -> str:
    """Heading of the published columns: only a run in the study's setting is comparable."""
    if source != "nih":
        return PUBLISHED_LABEL_PHANTOMS
    return PUBLISHED_LABEL_NIH if comparable else PUBLISHED_LABEL_NOT_STUDY


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
