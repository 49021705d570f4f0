"""Where explained maps' units sit on the input (`cxr.interpret.grid`), nested backbones included."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from cxr.interpret import grid
from cxr.models import build


def _downsampler(size: int, stages: int, name: str = "backbone") -> keras.Model:
    """EfficientNet's way down: per stage an asymmetric ZeroPadding2D ((0, 1), (0, 1)) and a
    valid 3x3 stride-2 convolution, then a "same" 3x3 convolution; all kernels ones."""
    inputs = keras.Input((size, size, 1))
    x = inputs
    for stage in range(stages):
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"pad{stage}")(x)
        x = layers.Conv2D(1, 3, strides=2, padding="valid", use_bias=False,
                          kernel_initializer="ones", name=f"down{stage}")(x)
        x = layers.Conv2D(1, 3, padding="same", use_bias=False, kernel_initializer="ones",
                          name=f"same{stage}")(x)
    return keras.Model(inputs, x, name=name)


def _nested(size: int, stages: int) -> keras.Model:
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0, name="scale")(inputs)
    x = _downsampler(size, stages)(x)
    x = layers.Identity(name="feature_map")(x)
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="features")(x))


def _gradient_centroid(model: keras.Model, layer: str, unit: tuple[int, int]) -> np.ndarray:
    """Centroid of |d unit / d input| (with ones kernels: the receptive field's centre)."""
    probe = keras.Model(model.inputs, model.get_layer(layer).output)
    x = tf.Variable(np.ones((1, *model.input_shape[1:]), np.float32))
    with tf.GradientTape() as tape:
        value = probe(x)[0, unit[0], unit[1], 0]
    weight = np.abs(tape.gradient(value, x).numpy()[0, ..., 0])
    rows, cols = np.indices(weight.shape)
    return np.array([(weight * rows).sum(), (weight * cols).sum()]) / weight.sum()


def test_nested_asymmetric_padding_puts_units_at_their_receptive_field_centres():
    model = _nested(64, 3)  # stride 8: each stage moves the centres by one of its input units
    rows, cols = grid.unit_centres(model, "feature_map")
    np.testing.assert_allclose(rows, 8 * np.arange(8) + 7)
    np.testing.assert_allclose(cols, rows)
    # The receptive field (all-ones kernels) of an inner unit, measured by its gradient, is
    # centred there, not at the even spread's 8 j + 3.5.
    for unit in [(3, 3), (4, 2)]:
        np.testing.assert_allclose(_gradient_centroid(model, "feature_map", unit),
                                   [rows[unit[0]], cols[unit[1]]], atol=1e-4)
    assert grid.unit_centres(model, "features") is None  # pooled: no grid


@pytest.mark.parametrize("size", [64, 224])
def test_keras_backbones_unit_centres(size):
    """DenseNet121 (symmetric padding, valid pools) and EfficientNetB0 (asymmetric
    correct_pad before every stride-2 convolution) at stride 32; a Keras change to either
    shows here."""
    n = size // 32
    dense = grid.unit_centres(build("densenet121", image_size=size), "feature_map")
    efficient = grid.unit_centres(build("efficientnetb0", image_size=size), "feature_map")
    np.testing.assert_allclose(dense[0], 32 * np.arange(n) + 14)
    np.testing.assert_allclose(efficient[0], 32 * np.arange(n) + 31)
    np.testing.assert_allclose(efficient[1], efficient[0])


def test_fusion_concat_of_disagreeing_maps_has_no_single_geometry():
    model = build("fusion", image_size=64, efficient_cut="block7b_add")
    np.testing.assert_allclose(grid.unit_centres(model, "densenet_projection")[0], [14, 46])
    np.testing.assert_allclose(grid.unit_centres(model, "efficientnet_projection")[0], [31, 63])
    assert grid.unit_centres(model, "fusion_concat") is None  # no single geometry
    where = grid.placement(model, "fusion_concat")  # each input's channels at their own
    assert where.kind == grid.RECEPTIVE_FIELDS_PER_INPUT
    assert [count for count, _ in where.groups] == [256, 256]
    np.testing.assert_allclose(where.groups[1][1][1], [31, 63])


def test_placement_falls_back_to_an_even_spread_for_a_layer_it_does_not_model():
    inputs = keras.Input((16, 16, 1), name="image")
    conv = layers.Conv2D(1, 3, padding="same", name="conv")(inputs)
    strided = layers.Lambda(lambda t: t[:, ::2, ::2, :], name="strided")(conv)
    nearest = layers.UpSampling2D(2, name="nearest")(conv)  # repeats pixels: not modelled
    model = keras.Model(inputs, [strided, nearest])
    assert grid.placement(model, "conv").kind == grid.RECEPTIVE_FIELDS
    assert grid.placement(model, "nearest").kind == grid.EVEN_SPREAD
    where = grid.placement(model, "strided")
    assert where.kind == grid.EVEN_SPREAD and len(where.groups) == 1
    np.testing.assert_allclose(where.groups[0][1][0], grid.even_centres(8, 16))


def test_merges_resizing_and_broadcast_scales():
    inputs = keras.Input((32, 32, 1), name="image")
    # "same" on an even input pads only after: unit j at 1 + 2 j, as an explicit ((0, 1),
    # (0, 1)) padding before a valid convolution puts it
    a = layers.Conv2D(2, 3, strides=2, padding="same", name="a")(inputs)
    b = layers.Conv2D(2, 3, strides=2, padding="valid", name="b")(
        layers.ZeroPadding2D(((0, 1), (0, 1)))(inputs))
    scale = layers.Reshape((1, 1, 2))(layers.GlobalAveragePooling2D()(a))
    scaled = layers.Multiply(name="scaled")([layers.Add(name="sum")([a, b]), scale])
    up = layers.Resizing(32, 32, name="up")(scaled)
    pooled = layers.Conv2D(2, 2, strides=2, padding="valid", name="pooled")(inputs)  # 0.5 + 2 j
    mixed = layers.Concatenate(name="mixed")([scaled, pooled])
    model = keras.Model(inputs, [up, mixed])
    for name in ("a", "sum", "scaled"):
        np.testing.assert_allclose(grid.unit_centres(model, name)[0], 1 + 2 * np.arange(16))
    # half-pixel resize back to 32: unit m samples 16-grid unit (m + 0.5) / 2 - 0.5
    np.testing.assert_allclose(grid.unit_centres(model, "up")[0], 0.5 + np.arange(32))
    assert grid.unit_centres(model, "mixed") is None  # 1 + 2 j beside 0.5 + 2 j


def test_even_centres_are_a_half_pixel_resize():
    np.testing.assert_allclose(grid.even_centres(2, 64), [15.5, 47.5])


def _two_branch_model(dead_branch: str) -> keras.Model:
    """Two 16 x 16 -> 2 x 2 branches whose units sit 2 px apart (3 + 8 j and 1 + 8 j),
    concatenated like fusion_concat; ones kernels and ReLUs, so every map and
    weight is >= 0. The head ignores `dead_branch` (zero weights)."""
    inputs = keras.Input((16, 16, 1), name="image")
    branches = {}
    # left: "same" pads after only, unit j at 1 + 2 j; right: two pixels before, at 2 j - 1
    for name, pad in (("left", ((0, 0), (0, 0))), ("right", ((2, 0), (2, 0)))):
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(inputs)
        x = layers.Conv2D(2, 3, strides=2, padding="valid" if name == "right" else "same",
                          kernel_initializer="ones", activation="relu", name=f"{name}_a")(x)
        x = layers.Conv2D(2, 3, strides=4, padding="same", kernel_initializer="ones",
                          activation="relu", name=f"{name}_map")(x)
        branches[name] = x
    x = layers.Concatenate(name="joined")([branches["left"], branches["right"]])
    features = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(2, activation="sigmoid", name="predictions")(features)
    model = keras.Model(inputs, outputs)
    kernel = np.ones((4, 2), np.float32)
    kernel[(slice(0, 2) if dead_branch == "left" else slice(2, 4)), :] = 0.0
    model.get_layer("predictions").set_weights([kernel, np.zeros(2, np.float32)])
    return model


@pytest.mark.parametrize("live", ["left", "right"])
def test_a_concatenation_places_each_inputs_channels_at_their_own_centres(live):
    from cxr.interpret.gradcam import GradCam

    model = _two_branch_model(dead_branch="right" if live == "left" else "left")
    groups = grid.channel_groups(model, "joined")
    assert [count for count, _ in groups] == [2, 2]
    np.testing.assert_allclose(groups[0][1][0], [3, 11])
    np.testing.assert_allclose(groups[1][1][1], [1, 9])
    assert grid.unit_centres(model, "joined") is None
    x = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 1)).astype(np.float32)
    joined = GradCam.of(model, "joined").heatmaps(x, np.zeros(3, np.int32))
    # Only the live branch carries weight: the map is that branch's own Grad-CAM, placed at
    # its own centres (not spread evenly, not at the other branch's).
    alone = GradCam.of(model, f"{live}_map")
    assert alone.centres is not None
    np.testing.assert_allclose(joined, alone.heatmaps(x, np.zeros(3, np.int32)), atol=1e-5)


def test_a_nested_model_without_a_graph_leaves_only_its_outputs_unknown():
    sequential = keras.Sequential([keras.Input((16, 16, 1)),
                                   layers.Conv2D(1, 3, strides=2, padding="valid")])
    inputs = keras.Input((16, 16, 1), name="image")
    conv = layers.Conv2D(1, 3, padding="same", name="conv")(inputs)
    after = layers.Identity(name="after")(sequential(conv))
    model = keras.Model(inputs, [conv, after])
    np.testing.assert_allclose(grid.unit_centres(model, "conv")[0], np.arange(16))
    assert grid.placement(model, "after").kind == grid.EVEN_SPREAD
