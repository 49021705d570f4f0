"""Every model the project knows, by name: display names and per-model constants.

The only place that lists all models. Pure Python (no Keras), so the report and the CLI can
use it without TensorFlow; the builders are dispatched by :mod:`cxr.models.factory`.
"""

from __future__ import annotations

from cxr.models.constants import (
    APPLICATION_MIN_IMAGE_SIZE,
    FEATURE_MAP_LAYER,
    FUSION_CONCAT_LAYER,
    SIMPLE_CNN_LAST_CONV,
    SIMPLE_CNN_MIN_IMAGE_SIZE,
)

MODEL_NAMES: tuple[str, ...] = ("simple_cnn", "densenet121", "efficientnetb0", "fusion")

# How the report and the CLI name each model.
DISPLAY_NAMES: dict[str, str] = {
    "simple_cnn": "Simple CNN",
    "densenet121": "DenseNet121",
    "efficientnetb0": "EfficientNetB0",
    "fusion": "Fusion",
}

# The top-level layer whose output Grad-CAM explains (the last spatial map it should read).
# simple_cnn: the last convolution; application models: an identity on the nested backbone's
# output; fusion: the concatenated map *before* the self-attention (docs/DESIGN.md says why).
GRADCAM_LAYER: dict[str, str] = {
    "simple_cnn": SIMPLE_CNN_LAST_CONV,
    "densenet121": FEATURE_MAP_LAYER,
    "efficientnetb0": FEATURE_MAP_LAYER,
    "fusion": FUSION_CONCAT_LAYER,
}

# The keras.applications backbones each model is built on (what a weights directory must hold).
BACKBONES: dict[str, tuple[str, ...]] = {
    "simple_cnn": (),
    "densenet121": ("densenet121",),
    "efficientnetb0": ("efficientnetb0",),
    "fusion": ("densenet121", "efficientnetb3"),
}

MIN_IMAGE_SIZE: dict[str, int] = {
    "simple_cnn": SIMPLE_CNN_MIN_IMAGE_SIZE,
    "densenet121": APPLICATION_MIN_IMAGE_SIZE,
    "efficientnetb0": APPLICATION_MIN_IMAGE_SIZE,
    "fusion": APPLICATION_MIN_IMAGE_SIZE,
}


def check_model_name(name: str) -> str:
    """``name`` if it is one of MODEL_NAMES, else a ValueError listing them."""
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name {name!r}; allowed: {', '.join(MODEL_NAMES)}.")
    return name


def display_name(name: str) -> str:
    """The model's display name; an unknown name is shown as given."""
    return DISPLAY_NAMES.get(name, name)


def gradcam_layer(name: str) -> str:
    """Name of the layer whose output Grad-CAM explains, for model `name`."""
    return GRADCAM_LAYER[check_model_name(name)]
