"""Custom Keras layers of the cxr models, registered so a saved `.keras` file loads safely.

Every layer here has a complete `get_config`, and none is a `Lambda`, so
`keras.models.load_model(path)` works with the default `safe_mode=True`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

# ImageNet channel statistics (RGB) of the "torch" preprocessing mode that
# `keras.applications.densenet.preprocess_input` applies.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@keras.saving.register_keras_serializable(package="cxr")
class ImageNetNormalization(layers.Layer):
    """`x / max_value`, minus the ImageNet mean, divided by the ImageNet std, per channel.

    The same arithmetic as `keras.applications.densenet.preprocess_input` (channels last),
    as a layer so that the model itself takes raw 0-255 pixels. The constants live in the
    config, not in weights: the layer adds no parameters.
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        max_value: float = 255.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"ImageNetNormalization: mean and std must have one value per channel; "
                f"got {len(self.mean)} means and {len(self.std)} stds."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"ImageNetNormalization: std must be positive; got {self.std}.")
        if max_value <= 0:
            raise ValueError(f"ImageNetNormalization: max_value must be positive; got {max_value}.")
        self.max_value = float(max_value)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels != len(self.mean):
            raise ValueError(
                f"ImageNetNormalization expects {len(self.mean)} channels (RGB, channels last); "
                f"got input shape {tuple(input_shape)}."
            )

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        return (x / self.max_value - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": list(self.mean), "std": list(self.std), "max_value": self.max_value})
        return config


@keras.saving.register_keras_serializable(package="cxr")
class SpatialSelfAttention(layers.Layer):
    """Self-attention over the spatial positions of a feature map (SAGAN, Zhang et al. 2019).

    query, key and value are 1x1 convolutions (with bias) of the input; each position attends
    to every position with weights `softmax(q k^T)`; the attended values are scaled by a
    learned scalar `gamma` (initialised to 0, so the block starts as the identity) and added
    back to the input: `out = gamma * attention(v) + x`.

    Args:
        key_channels: channels of query and key; `None` means the input's channels.
            The value always has the input's channels, so the residual sum is defined.
    """

    def __init__(self, key_channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if key_channels is not None and (not isinstance(key_channels, int) or key_channels < 1):
            raise ValueError(
                f"SpatialSelfAttention: key_channels must be a positive int or None; "
                f"got {key_channels!r}."
            )
        self.key_channels = key_channels

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                "SpatialSelfAttention expects a (batch, height, width, channels) input with a "
                f"known channel count; got shape {tuple(input_shape)}."
            )
        channels = int(input_shape[-1])
        key_channels = self.key_channels or channels
        self.query = layers.Conv2D(key_channels, 1, name="query")
        self.key = layers.Conv2D(key_channels, 1, name="key")
        self.value = layers.Conv2D(channels, 1, name="value")
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        if height is None or width is None:
            height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
        positions = height * width

        def flatten(t):
            return ops.reshape(t, (batch, positions, t.shape[-1]))

        query = flatten(self.query(inputs))
        key = flatten(self.key(inputs))
        value = flatten(self.value(inputs))
        # Logits and softmax in float32 whatever the compute dtype: q.k sums `key_channels`
        # products, and under mixed_float16 that sum overflows float16 (max 65504) long
        # before q or k do (q, k ~ 300 over 512 channels gives ~4.6e7 = inf, and the
        # softmax of a row holding inf is NaN). Casting *after* the matmul is too late.
        logits = ops.matmul(ops.cast(query, "float32"),
                            ops.transpose(ops.cast(key, "float32"), (0, 2, 1)))
        weights = ops.cast(ops.softmax(logits, axis=-1), value.dtype)
        attended = ops.reshape(ops.matmul(weights, value), (batch, height, width, channels))
        return self.gamma * attended + inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"key_channels": self.key_channels})
        return config
