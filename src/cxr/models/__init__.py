"""The cxr models: `build(name, ...)` for `MODEL_NAMES`, and the helpers later stages use.

Every model takes raw 0-255 RGB images, carries its own preprocessing, ends in a `features`
layer (global average pool) followed by a Dropout/Dense head whose last layer,
`predictions`, has 14 sigmoid outputs.

Names are resolved lazily (PEP 562): ``cxr.models.registry`` and ``cxr.models.constants`` are
pure Python, and importing them (or this package) does not import Keras. Loading a saved
model needs the custom layers registered: ``import cxr.models.layers``.
"""

import importlib

_WHERE = {
    "BACKBONE_NAMES": "backbones",
    "backbone_layers": "backbones",
    "load_weights_file": "backbones",
    "set_backbone_trainable": "backbones",
    "apply_head": "heads",
    "head_layers": "heads",
    "prior_logits": "heads",
    "set_output_bias": "heads",
    "split_at_features": "heads",
    "ImageNetNormalization": "layers",
    "SpatialSelfAttention": "layers",
    "preprocessing_layer": "preprocessing",
    "save_model": "saving",
    "build": "factory",
    "model_options": "factory",
    "DISPLAY_NAMES": "registry",
    "GRADCAM_LAYER": "registry",
    "MIN_IMAGE_SIZE": "registry",
    "MODEL_NAMES": "registry",
    "display_name": "registry",
    "gradcam_layer": "registry",
    "FEATURES_LAYER": "constants",
    "FEATURE_MAP_LAYER": "constants",
    "FUSION_ATTENTION_LAYER": "constants",
    "FUSION_CONCAT_LAYER": "constants",
    "OUTPUT_LAYER": "constants",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'cxr.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cxr.models.{_WHERE[name]}"), name)


def __dir__():
    return __all__
