"""Grad-CAM: points at a planted blob, batched = one by one, grid placement, every model."""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest
from keras import layers

from cxr.interpret import gradcam as cam
from cxr.interpret.grid import even_centres, unit_centres
from cxr.interpret.localization import pointing_hit
from cxr.labels import INDEX
from cxr.models import GRADCAM_LAYER, MODEL_NAMES, build

BLOB_SIZE, BLOB_RADIUS = 48, 4


def blob_images(n: int, seed: int):
    """Grey noise; half the images hold a bright disk at a random place. -> (x, y, has, centres)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:BLOB_SIZE, 0:BLOB_SIZE] + 0.5
    x = rng.normal(90, 20, (n, BLOB_SIZE, BLOB_SIZE)).clip(0, 255)
    has = rng.random(n) < 0.5
    centres = rng.uniform(8, BLOB_SIZE - 8, (n, 2))
    for i in np.flatnonzero(has):
        cx, cy = centres[i]
        x[i][(xx - cx) ** 2 + (yy - cy) ** 2 <= BLOB_RADIUS**2] = 230
    images = np.repeat(x[..., None], 3, axis=-1).astype("float32")
    return images, has[:, None].astype("float32"), has, centres


@pytest.fixture(scope="module")
def blob_model() -> keras.Model:
    """simple_cnn at 48 px with one output, trained (a few seconds) to fire on the blob."""
    keras.utils.set_random_seed(0)
    model = build("simple_cnn", image_size=BLOB_SIZE, dropout=0.0, n_labels=1)
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
    x, y, _, _ = blob_images(512, seed=0)
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    return model


@pytest.mark.slow
def test_peak_falls_inside_the_planted_blob(blob_model):
    x, _, has, centres = blob_images(64, seed=1)
    probabilities = blob_model.predict(x, verbose=0)[:, 0]
    assert np.mean((probabilities > 0.5) == has) >= 0.9, "the blob model did not learn"
    positives = np.flatnonzero(has)
    heatmaps = cam.gradcam(blob_model, x[positives], 0)
    r = BLOB_RADIUS
    hits = [pointing_hit(heatmap, (centres[i, 0] - r, centres[i, 1] - r, 2 * r, 2 * r))
            for heatmap, i in zip(heatmaps, positives, strict=True)]
    assert np.mean(hits) >= 0.8, f"pointing game {np.mean(hits):.2f} on {len(hits)} blobs"


@pytest.mark.slow
def test_batched_equals_one_by_one_in_unit_range_at_input_resolution(blob_model):
    x, _, _, _ = blob_images(7, seed=2)
    batched = cam.gradcam(blob_model, x, 0, batch_size=3)
    single = np.concatenate([cam.gradcam(blob_model, x[i : i + 1], 0) for i in range(len(x))])
    assert batched.shape == (7, BLOB_SIZE, BLOB_SIZE) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert batched.min() >= 0.0 and batched.max() <= 1.0
    for heatmap in batched:  # each map is either flat or normalised to a maximum of 1
        assert heatmap.max() in (0.0, 1.0)


def _linear_model(kernel_sign: float, bias: float = 0.0, size: int = 16) -> keras.Model:
    """image -> relu(1x1 conv = red channel / 255) `conv` -> GAP `features` -> Dense(14)
    `predictions` whose weights are `kernel_sign` for every finding: Grad-CAM = the red channel
    (positive sign) or nothing (negative sign)."""
    inputs = keras.Input((size, size, 3), name="image")
    conv = layers.Conv2D(1, 1, activation="relu", name="conv")
    x = conv(inputs)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    dense = layers.Dense(14, activation="sigmoid", name="predictions")
    outputs = dense(x)
    model = keras.Model(inputs, outputs, name="linear_probe")
    conv.set_weights([np.array([1 / 255, 0, 0], "float32").reshape(1, 1, 3, 1),
                      np.zeros(1, "float32")])
    dense.set_weights([np.full((1, 14), kernel_sign, "float32"), np.full(14, bias, "float32")])
    return model


def test_positive_evidence_is_the_map_and_its_absence_is_flat():
    image = np.zeros((1, 16, 16, 3), "float32")
    image[0, 3, 11, 0] = 255.0  # one bright red pixel
    image[0, 9, 2, 0] = 100.0
    positive = cam.gradcam(_linear_model(+1.0), image, "Effusion")[0]
    assert np.unravel_index(np.argmax(positive), positive.shape) == (3, 11)
    np.testing.assert_allclose(positive[9, 2], 100 / 255, atol=1e-6)
    negative = cam.gradcam(_linear_model(-1.0), image, "Effusion")[0]
    assert not negative.any()  # no positive evidence: zeros, not NaN
    assert not pointing_hit(negative, (0, 0, 16, 16))


def test_the_score_is_the_logit_so_a_saturated_probability_still_explains():
    model = _linear_model(+1.0, bias=200.0)  # sigmoid == 1.0 exactly in float32
    image = np.zeros((1, 16, 16, 3), "float32")
    image[0, 5, 6, 0] = 255.0
    assert float(model(image)[0, 0]) == 1.0
    heatmap = cam.gradcam(model, image, 0)[0]
    assert np.unravel_index(np.argmax(heatmap), heatmap.shape) == (5, 6)


def test_class_selection_by_index_name_alias_and_per_image():
    model = _linear_model(+1.0)
    x = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3))
    by_name = cam.gradcam(model, x, ["Infiltrate", "Mass", 0])
    by_index = cam.gradcam(model, x, [INDEX["Infiltration"], INDEX["Mass"], 0])
    np.testing.assert_array_equal(by_name, by_index)
    with pytest.raises(ValueError, match="unknown finding 'Flu'"):
        cam.gradcam(model, x, "Flu")
    with pytest.raises(ValueError, match="out of range"):
        cam.gradcam(model, x, 14)
    with pytest.raises(ValueError, match="one per image"):
        cam.gradcam(model, x, [0, 1])
    with pytest.raises(ValueError, match=r"images must have shape \(N, 16, 16, 3\)"):
        cam.gradcam(model, x[0], 0)
    with pytest.raises(ValueError, match="batch_size"):
        cam.gradcam(model, x, 0, batch_size=0)
    assert cam.gradcam(model, x[:0], 0).shape == (0, 16, 16)


def test_simple_cnn_units_sit_at_their_receptive_field_centres():
    model = build("simple_cnn", image_size=64)
    rows, cols = unit_centres(model, "block3_conv")
    # valid 3x3 conv, 2x2 pool, twice, then a valid 3x3 conv: unit j at 8.5 + 4 j
    np.testing.assert_allclose(rows, 8.5 + 4 * np.arange(12))
    np.testing.assert_allclose(cols, rows)
    assert unit_centres(model, "features") is None  # GAP changes the grid


def test_interpolation_matrix_hits_centres_and_clamps_outside():
    centres = np.array([8.5, 12.5, 16.5])
    weights = cam.interpolation_matrix(centres, 24)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(weights[[0, 8, 9, 10, 23]], [[1, 0, 0], [1, 0, 0],
                                                             [0.875, 0.125, 0], [0.625, 0.375, 0],
                                                             [0, 0, 1]])
    # the even fallback reproduces tf.image.resize's half-pixel bilinear resize
    import tensorflow as tf

    grid = np.random.default_rng(0).random((5, 5)).astype("float32")
    even = cam.interpolation_matrix(even_centres(5, 40), 40)
    resized = tf.image.resize(grid[None, ..., None], (40, 40), method="bilinear")[0, ..., 0]
    np.testing.assert_allclose(even @ grid @ even.T, resized.numpy(), atol=1e-5)


def test_explained_layers_per_model():
    assert cam.explained_layer("simple_cnn") == GRADCAM_LAYER["simple_cnn"] == "block3_conv"
    assert cam.explained_layer("densenet121") == "feature_map"
    assert cam.explained_layer("fusion") == "fusion_concat"  # before attention: module docstring
    assert cam.explained_layer(_linear_model(1.0)) == "conv"  # fallback: last map before GAP
    with pytest.raises(ValueError, match="unknown model name"):
        cam.explained_layer("resnet")


def test_grad_model_is_cached_per_model_and_released_with_it():
    model = _linear_model(1.0)
    first = cam.GradCam.of(model)
    assert cam.GradCam.of(model) is first and cam.GradCam.of(model, "conv") is first
    reference = weakref.ref(model)
    del model, first
    gc.collect()
    assert reference() is None


ALL_MODELS = [pytest.param(n, marks=pytest.mark.slow) if n == "fusion" else n for n in MODEL_NAMES]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_gives_finite_unit_range_non_flat_maps_at_input_resolution(name):
    """Untrained (seeded) models: each finding's map is finite, in [0, 1], at input size, and
    most of them carry evidence (a map normalised to a maximum of 1 that varies over the
    image). A Grad-CAM that returned flat (all-zero) maps fails here. Where a map peaks is
    checked on a trained model: test_peak_falls_inside_the_planted_blob."""
    # 64 px: at 32 the application backbones end in a 1 x 1 map, which can only be flat.
    size = 64 if name != "simple_cnn" else 40
    keras.utils.set_random_seed(0)
    model = build(name, image_size=size)
    if name == "fusion":
        model.get_layer("attention").gamma.assign(0.5)  # attention on: gradients through it
    x = np.random.default_rng(1).uniform(0, 255, (1, size, size, 3)).astype("float32")
    classes = list(range(len(INDEX)))
    heatmaps = cam.gradcam(model, np.repeat(x, len(classes), axis=0), classes,
                           cam.explained_layer(name), batch_size=7)
    assert heatmaps.shape == (len(classes), size, size)
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0 and heatmaps.max() <= 1
    informative = [bool(h.max() == 1.0 and h.std() > 0.01) for h in heatmaps]
    assert sum(informative) >= len(classes) // 2, f"{sum(informative)} of 14 maps carry evidence"
