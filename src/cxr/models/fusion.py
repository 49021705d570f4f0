"""Dense-Efficient Attention-Fusion: DenseNet121 and EfficientNetB3 side by side.

    image (0-255) -+- ImageNet normalization -- DenseNet121 to conv5_block16_concat ------+
                   |                              (7x7x1024 at 224) -> 1x1 conv 256 -> resize
                   +- (as is) ----------------- EfficientNetB3 to block6a_expand_activation
                                                  (14x14x816 at 224) -> 1x1 conv 256 -> resize
    concat (14x14x512) -> spatial self-attention (`attention`) -> GAP (`features`)
    -> Dropout -> Dense(14, sigmoid) (`predictions`)

At 224 with trainable backbones: 10,638,528 parameters, 10,521,273 trainable, 117,255
non-trainable (BatchNormalization and EfficientNet Normalization statistics).
"""

from __future__ import annotations

import keras
from keras import layers

from cxr.labels import N_LABELS
from cxr.models.backbones import MIN_IMAGE_SIZE, application_trunk, check_image_size
from cxr.models.constants import FUSION_ATTENTION_LAYER, FUSION_CONCAT_LAYER
from cxr.models.heads import pooled_features, predictions
from cxr.models.layers import SpatialSelfAttention
from cxr.models.preprocessing import preprocessing_layer

NAME = "fusion"
DENSE_CUT = "conv5_block16_concat"
EFFICIENT_CUT = "block6a_expand_activation"
PROJ_CHANNELS = 256
GRADCAM_LAYER = FUSION_CONCAT_LAYER  # before the attention: docs/DESIGN.md


def projection(x, channels: int, name: str):
    """1x1 convolution (with bias) to a common channel count."""
    return layers.Conv2D(channels, 1, name=f"{name}_projection")(x)


def resize_to(x, grid: tuple[int, int], name: str):
    """Bilinear resize of a feature map to `grid` (no layer when it already has that grid)."""
    if tuple(x.shape[1:3]) == grid:
        return x
    return layers.Resizing(*grid, interpolation="bilinear", name=f"{name}_resize")(x)


def build_fusion(
    image_size: int = 224,
    weights: str | None = None,
    dense_cut: str = DENSE_CUT,
    efficient_cut: str = EFFICIENT_CUT,
    proj_channels: int = PROJ_CHANNELS,
    dropout: float = 0.5,
    n_labels: int = N_LABELS,
) -> keras.Model:
    """The fusion model; input raw 0-255 RGB `(image_size, image_size, 3)`.

    Both branches are cut from their applications (`densenet121_trunk`,
    `efficientnetb3_trunk`); both maps go to the finer of the two grids.
    """
    image_size = check_image_size(image_size, MIN_IMAGE_SIZE, NAME)
    if not isinstance(proj_channels, int) or proj_channels < 1:
        raise ValueError(f"fusion: proj_channels must be a positive int; got {proj_channels!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"fusion: dropout must be in [0, 1); got {dropout!r}.")
    dense_trunk = application_trunk("densenet121", dense_cut, image_size, weights)
    efficient_trunk = application_trunk("efficientnetb3", efficient_cut, image_size, weights)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    dense = dense_trunk(preprocessing_layer("densenet121")(inputs))
    efficient = efficient_trunk(preprocessing_layer("efficientnetb3")(inputs))
    dense = projection(dense, proj_channels, "densenet")
    efficient = projection(efficient, proj_channels, "efficientnet")

    grid = max(tuple(dense.shape[1:3]), tuple(efficient.shape[1:3]), key=lambda g: g[0] * g[1])
    dense = resize_to(dense, grid, "densenet")
    efficient = resize_to(efficient, grid, "efficientnet")
    x = layers.Concatenate(name=FUSION_CONCAT_LAYER)([dense, efficient])
    x = SpatialSelfAttention(name=FUSION_ATTENTION_LAYER)(x)
    x = pooled_features(x)
    x = layers.Dropout(dropout, name="features_dropout")(x)
    outputs = predictions(x, n_labels)
    return keras.Model(inputs, outputs, name=f"cxr_{NAME}")
