"""``metadata.json`` beside a trained model: what using the model needs besides its weights.

Written by the train stage, read by ``cxr predict`` and the localize stage, so neither has to
re-derive (or guess) the label order, the input size, the Grad-CAM layer or the operating
thresholds. Pure Python: no Keras.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

METADATA_FILE = "metadata.json"
_KEYS = ("model", "labels", "image_size", "gradcam_layer", "threshold_method", "thresholds")


class MetadataError(FileNotFoundError):
    """A model folder without a usable metadata.json."""


def model_metadata(model: str, labels: Sequence[str], image_size: int, gradcam_layer: str,
                   threshold_method: str, thresholds: Sequence[float]) -> dict:
    """The metadata dict: ``thresholds`` maps each finding (in ``labels`` order) to its
    validation operating threshold, chosen by ``threshold_method``."""
    if len(thresholds) != len(labels):
        raise ValueError(f"thresholds has {len(thresholds)} values; expected one per label "
                         f"({len(labels)}).")
    return {"model": model, "labels": list(labels), "image_size": int(image_size),
            "gradcam_layer": gradcam_layer, "threshold_method": threshold_method,
            "thresholds": {label: float(t) for label, t in zip(labels, thresholds, strict=True)}}


def write_metadata(model_dir: str | Path, metadata: Mapping) -> Path:
    path = Path(model_dir) / METADATA_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(metadata), indent=2) + "\n")
    return path


def read_metadata(model_dir: str | Path) -> dict:
    """The metadata of the model saved in ``model_dir``; MetadataError if it is missing."""
    path = Path(model_dir) / METADATA_FILE
    if not path.is_file():
        raise MetadataError(
            f"{path} not found: the train stage writes it beside model.keras (label order, "
            f"image size, Grad-CAM layer, thresholds). Retrain, or write one with "
            f"cxr.models.metadata.write_metadata.")
    metadata = json.loads(path.read_text())
    missing = [key for key in _KEYS if key not in metadata]
    if missing:
        raise MetadataError(f"{path} lacks {missing}; expected the keys {list(_KEYS)}.")
    return metadata
