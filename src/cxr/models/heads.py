"""Classification heads, and the split of a model at its `features` layer.

Every cxr model ends the same way: a layer named `features` (the global average pool, the
last deterministic layer), then "the head", which holds only `Dropout` and `Dense` layers and
ends in `Dense(N_LABELS, sigmoid)` named `predictions`. Monte-Carlo dropout's default
(`layers="head"`) exploits this: compute `features` once, then re-run only the cheap head many
times with the head's dropout active. A backbone may hold Dropout layers of its own before
`features` (EfficientNet's stochastic depth); only `layers="all"` samples those.
"""

from __future__ import annotations

import keras
from keras import layers

from cxr.labels import N_LABELS
from cxr.models.constants import FEATURES_LAYER, OUTPUT_LAYER
from cxr.validation import check_fraction

HEAD_LAYER_TYPES = (layers.Dropout, layers.Dense)


def _check_rate(dropout: float) -> None:
    check_fraction(dropout, "dropout", include_boundaries="left", type_error=ValueError)


def pooled_features(x):
    """Global average pool of a spatial feature map: the `features` layer."""
    return layers.GlobalAveragePooling2D(name=FEATURES_LAYER)(x)


def predictions(x, n_labels: int = N_LABELS):
    """One independent sigmoid per finding (multi-label): the `predictions` layer.

    Always float32, so probabilities and the loss stay exact under mixed precision.
    """
    return layers.Dense(n_labels, activation="sigmoid", dtype="float32", name=OUTPUT_LAYER)(x)


def dense_head(x, hidden_units: int = 512, dropout: float = 0.5, n_labels: int = N_LABELS):
    """GAP -> Dropout -> Dense(hidden, relu) -> Dropout -> Dense(14, sigmoid).

    Both Dropout layers are what MC dropout samples with `layers="head"`.

    The head of the DenseNet121 and EfficientNetB0 models; `x` is the backbone's feature map.
    """
    _check_rate(dropout)
    x = pooled_features(x)
    x = layers.Dropout(dropout, name="features_dropout")(x)
    x = layers.Dense(hidden_units, activation="relu", name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return predictions(x, n_labels)


def head_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The `Dropout`/`Dense` layers after the `features` layer of `model`, in order."""
    try:
        features = model.get_layer(FEATURES_LAYER)
    except ValueError as err:
        raise ValueError(
            f"model {model.name!r} has no layer named {FEATURES_LAYER!r}; "
            "it was not built by cxr.models.build."
        ) from err
    after = list(model.layers[model.layers.index(features) + 1 :])
    foreign = [layer.name for layer in after if not isinstance(layer, HEAD_LAYER_TYPES)]
    if foreign or not after:
        raise ValueError(
            f"the layers after {FEATURES_LAYER!r} in model {model.name!r} must be "
            f"Dropout/Dense only; found {foreign or 'none'}."
        )
    return after


def split_at_features(model: keras.Model) -> tuple[keras.Model, list[keras.layers.Layer]]:
    """`(feature_model, head_layers)`: the model up to `features`, and the layers after it.

    `feature_model` shares its layers (and weights) with `model`; `apply_head` re-applies
    the head layers to its output.
    """
    layers_after = head_layers(model)
    inputs = model.input if len(model.inputs) == 1 else model.inputs
    feature_model = keras.Model(
        inputs, model.get_layer(FEATURES_LAYER).output, name=f"{model.name}_features"
    )
    return feature_model, layers_after


def apply_head(model: keras.Model, features, training_dropout: bool):
    """Re-apply `model`'s head to precomputed `features` (the output of the feature model).

    Dropout layers run with `training=training_dropout` (True for a Monte-Carlo pass);
    Dense layers run normally. With `training_dropout=False` the result equals `model(x)`.
    """
    x = features
    for layer in head_layers(model):
        x = layer(x, training=training_dropout) if isinstance(layer, layers.Dropout) else layer(x)
    return x


def prior_logits(train_labels, epsilon: float = 1e-4):
    """Per-class log-odds of the positive rate in `train_labels` (n_images, n_labels): the
    bias b = -log((1 - pi) / pi) of Lin et al. (focal loss, "Initialization"), pi clipped to
    [epsilon, 1 - epsilon] so that a class without positives gets a finite bias."""
    import numpy as np

    labels = np.asarray(train_labels, dtype=np.float64)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"train_labels must be a non-empty (n_images, n_labels) matrix; "
                         f"got shape {labels.shape}.")
    prior = np.clip(labels.mean(axis=0), epsilon, 1 - epsilon)
    return np.log(prior / (1 - prior)).astype(np.float32)


def set_output_bias(model: keras.Model, bias) -> None:
    """Set the bias of `model`'s `predictions` layer (one value per finding), in place.

    Trained from there, the value is part of the saved model's weights.
    """
    import numpy as np

    layer = model.get_layer(OUTPUT_LAYER)
    bias = np.asarray(bias, dtype=np.float32)
    if bias.shape != tuple(layer.bias.shape):
        raise ValueError(f"output bias must have shape {tuple(layer.bias.shape)} (one value per "
                         f"finding); got {bias.shape}.")
    layer.bias.assign(bias)
