"""The 14 ChestX-ray14 pathologies: canonical order, aliases, multi-hot encode/decode.

The canonical order is NIH's alphabetical spelling; every label column, model output and
metric in the project uses it.
"""

from __future__ import annotations

import numpy as np

LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
N_LABELS = len(LABELS)
NO_FINDING = "No Finding"
INDEX = {name: i for i, name in enumerate(LABELS)}

# Spellings seen in NIH files besides the canonical one. BBox_List_2017.csv writes
# "Infiltrate"; some re-distributions write "Pleural Thickening" with a space.
ALIASES: dict[str, str] = {
    "Infiltrate": "Infiltration",
    "Pleural Thickening": "Pleural_Thickening",
    "Pleural-Thickening": "Pleural_Thickening",
}


class LabelError(ValueError):
    """A finding label that is not one of the 14 (nor an alias), or an impossible combination."""


def canonical(name: str) -> str:
    """Return the canonical spelling of a finding name; raise LabelError for unknown names."""
    name = name.strip()
    if name in INDEX:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise LabelError(f"unknown finding {name!r}; expected one of {', '.join(LABELS)} or {NO_FINDING!r}")


def encode(finding_labels: str) -> np.ndarray:
    """Multi-hot encode an NIH 'Finding Labels' cell ('A|B' or 'No Finding') -> uint8[14]."""
    parts = [p.strip() for p in str(finding_labels).split("|")]
    if any(p == "" for p in parts):
        raise LabelError(f"empty finding in {finding_labels!r}")
    vector = np.zeros(N_LABELS, dtype=np.uint8)
    if NO_FINDING in parts:
        if len(parts) > 1:
            raise LabelError(f"{NO_FINDING!r} together with a finding in {finding_labels!r}")
        return vector
    for part in parts:
        vector[INDEX[canonical(part)]] = 1
    return vector


def decode(vector) -> str:
    """Inverse of encode: uint8[14] -> 'A|B' in canonical order, or 'No Finding'."""
    vector = np.asarray(vector)
    if vector.shape != (N_LABELS,):
        raise LabelError(f"expected a vector of {N_LABELS} labels, got shape {vector.shape}")
    names = [LABELS[i] for i in np.flatnonzero(vector)]
    return "|".join(names) if names else NO_FINDING
