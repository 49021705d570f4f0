"""A small from-scratch CNN baseline: three conv blocks, GAP, a dense head.

Conv2D(32)-MaxPool-Conv2D(64)-MaxPool-Conv2D(128)-MaxPool-GAP-Dense(256)-Dropout-Dense(14):
129,870 parameters at 224x224x3 (the count does not depend on the image size).
"""

from __future__ import annotations

import keras
from keras import layers

from cxr.labels import N_LABELS
from cxr.models.constants import SIMPLE_CNN_LAST_CONV, SIMPLE_CNN_MIN_IMAGE_SIZE
from cxr.models.heads import pooled_features, predictions
from cxr.models.preprocessing import preprocessing_layer
from cxr.validation import check_fraction

NAME = "simple_cnn"
FILTERS: tuple[int, ...] = (32, 64, 128)
# The last convolution's output (block{len(FILTERS)}_conv): the spatial map Grad-CAM explains.
GRADCAM_LAYER = SIMPLE_CNN_LAST_CONV
MIN_IMAGE_SIZE = SIMPLE_CNN_MIN_IMAGE_SIZE


def conv_block(x, filters: int, name: str):
    """3x3 convolution (valid, relu) then 2x2 max pooling."""
    x = layers.Conv2D(filters, 3, activation="relu", name=f"{name}_conv")(x)
    return layers.MaxPooling2D(2, name=f"{name}_pool")(x)


def build_simple_cnn(
    image_size: int = 224,
    hidden_units: int = 256,
    dropout: float = 0.5,
    n_labels: int = N_LABELS,
) -> keras.Model:
    """The baseline CNN; input raw 0-255 RGB `(image_size, image_size, 3)`.

    The Dropout after Dense(hidden_units) is what gives Monte-Carlo dropout a spread.
    """
    check_fraction(dropout, "simple_cnn: dropout", include_boundaries="left",
                   type_error=ValueError)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = preprocessing_layer(NAME, name="rescale")(inputs)
    for index, filters in enumerate(FILTERS, start=1):
        x = conv_block(x, filters, name=f"block{index}")
    x = pooled_features(x)
    x = layers.Dense(hidden_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = predictions(x, n_labels)
    return keras.Model(inputs, outputs, name=NAME)
