"""The cxr models: `build(name, ...)` for `MODEL_NAMES`, and the helpers later stages use.

Every model takes raw 0-255 RGB images, carries its own preprocessing, ends in a `features`
layer (global average pool) followed by a Dropout/Dense head whose last layer,
`predictions`, has 14 sigmoid outputs.
"""

from cxr.models.backbones import (
    BACKBONE_NAMES,
    backbone_layers,
    load_weights_file,
    set_backbone_trainable,
)
from cxr.models.heads import (
    FEATURES_LAYER,
    OUTPUT_LAYER,
    apply_head,
    head_layers,
    split_at_features,
)
from cxr.models.layers import ImageNetNormalization, SpatialSelfAttention
from cxr.models.preprocessing import preprocessing_layer
from cxr.models.registry import (
    GRADCAM_LAYER,
    MIN_IMAGE_SIZE,
    MODEL_NAMES,
    build,
    gradcam_layer,
    model_options,
)

__all__ = [
    "BACKBONE_NAMES",
    "FEATURES_LAYER",
    "GRADCAM_LAYER",
    "MIN_IMAGE_SIZE",
    "MODEL_NAMES",
    "OUTPUT_LAYER",
    "ImageNetNormalization",
    "SpatialSelfAttention",
    "apply_head",
    "backbone_layers",
    "build",
    "gradcam_layer",
    "head_layers",
    "load_weights_file",
    "model_options",
    "preprocessing_layer",
    "set_backbone_trainable",
    "split_at_features",
]
