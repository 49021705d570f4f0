"""cxr.evaluation.uncertainty: Monte-Carlo dropout with BatchNorm in inference mode, fast path == full passes.

The test model is tiny (8 px, one conv + BatchNorm) with non-trivial BatchNorm moving
statistics, so using batch statistics instead (the `training=True` bug) is visible.
"""

from __future__ import annotations

import dataclasses
import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from cxr.evaluation.uncertainty import (
    MCResult,
    MonteCarloHead,
    dropout_layers,
    mc_dropout_predict,
    mc_full_passes,
    predictions_table,
    sampling_every_dropout,
)
from cxr.labels import LABELS, N_LABELS
from cxr.models import build

SIZE = 8


def bn_model(feature_rate: float = 0.3, head_rate: float = 0.5, seed: int = 0) -> keras.Model:
    """conv -> BatchNorm (moving stats far from any batch's) -> GAP `features` -> head.

    The weights come from `seed`: unseeded, they followed whatever ran before, and 4 of 25
    draws left the head's MC std under 0.02 on the test images (dead ReLU units), which
    failed the statistical comparison of the two scopes at random (seed 0: std 0.035).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    x = layers.Conv2D(6, 3, name="conv")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Dropout(feature_rate, name="features_dropout")(x)
    x = layers.Dense(16, activation="relu", name="head_dense")(x)
    x = layers.Dropout(head_rate, name="head_dropout")(x)
    outputs = layers.Dense(N_LABELS, activation="sigmoid", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="bn_model")
    rng = np.random.default_rng(1)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0.5, 0.3, 6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.01, 0.05, 6).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, 6).astype("float32"))
    bn.beta.assign(rng.normal(0.0, 0.5, 6).astype("float32"))
    return model


def images(n: int = 6, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return bn_model()


# --- BatchNorm stays in inference mode --------------------------------------------------


def test_rate_zero_mean_is_inference_mode_not_training_mode():
    model = bn_model(0.0, 0.0)
    x = images()
    result = mc_dropout_predict(model, x, passes=4, batch_size=4)
    inference = keras.ops.convert_to_numpy(model(x, training=False))
    training = keras.ops.convert_to_numpy(model(x, training=True))
    np.testing.assert_allclose(result.mean, inference, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(result.std, 0.0)
    # The common bug, model(x, training=True), normalises with batch statistics instead.
    assert np.abs(training - inference).max() > 0.05


def test_an_image_does_not_depend_on_its_batch(model):
    """With BatchNorm in training mode an image's prediction would depend on its batch."""
    x = images(8)
    together = mc_dropout_predict(model, x, passes=5, batch_size=8)
    pairs = mc_dropout_predict(model, x, passes=5, batch_size=2)
    np.testing.assert_allclose(pairs.mean, together.mean, atol=1e-6)
    np.testing.assert_allclose(pairs.std, together.std, atol=1e-6)


# --- fast path == reference path --------------------------------------------------------


@pytest.mark.parametrize("which", ["bn_model", "simple_cnn"])
def test_fast_path_equals_full_passes(model, which):
    if which == "simple_cnn":
        model, x = build("simple_cnn", image_size=32), images(5, size=32)
    else:
        x = images(7)
    fast = mc_dropout_predict(model, x, passes=6, seed=3, batch_size=4, keep_samples=True)
    full = mc_full_passes(model, x, passes=6, seed=3, batch_size=3)
    assert fast.samples.shape == full.samples.shape == (6, len(x), N_LABELS)
    np.testing.assert_allclose(fast.samples, full.samples, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.mean, full.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.std, full.std, rtol=1e-4, atol=1e-6)
    assert fast.std.max() > 1e-3  # the passes really differ


def keras_dropout_passes(model: keras.Model, x: np.ndarray, passes: int) -> np.ndarray:
    """(passes, n, K): an independent reference. The model's own layers, called one by one in
    order (the test model is a chain), every Dropout with training=True (Keras' own masks and
    scaling) and every other layer, BatchNorm included, in inference mode; the images are
    tiled so that each pass draws its own masks. Nothing of cxr.evaluation.uncertainty is used."""
    h = keras.ops.convert_to_tensor(np.tile(x, (passes, 1, 1, 1)))
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        h = layer(h, training=isinstance(layer, layers.Dropout))
    return keras.ops.convert_to_numpy(h).reshape(passes, len(x), -1)


def same_distribution(fast: MCResult, reference: np.ndarray) -> bool:
    """Means and stds agree within 5 standard errors for every image and finding."""
    passes = reference.shape[0]
    ref_mean, ref_std = reference.mean(axis=0), reference.std(axis=0)
    spread = np.maximum(np.maximum(ref_std, fast.std), 1e-4)
    mean_ok = np.abs(fast.mean - ref_mean) <= 5 * spread * np.sqrt(2.0 / passes)
    std_ok = np.abs(fast.std - ref_std) <= 5 * spread * np.sqrt(1.0 / passes) + 1e-4
    return bool(mean_ok.all() and std_ok.all())


def test_fast_path_matches_keras_own_dropout_in_distribution(monkeypatch):
    """The fast path against Keras' Dropout itself (the masks cannot be matched, so the test
    is statistical: 4,000 passes, 5 standard errors), and the comparison is tight enough to
    catch a fast path that skips the masks or draws them at the wrong rate."""
    import cxr.evaluation.uncertainty as uncertainty

    keras.utils.set_random_seed(5)  # the head's Dense weights
    model = bn_model()
    x, passes = images(5), 4000
    keras.utils.set_random_seed(11)
    reference = keras_dropout_passes(model, x, passes)
    fast = mc_dropout_predict(model, x, passes=passes, seed=3, batch_size=5)
    assert np.median(reference.std(axis=0)) > 1e-2  # dropout really varies the outputs
    assert same_distribution(fast, reference)

    draw = uncertainty._image_masks
    wrong_paths = {
        "masks not applied": lambda specs, *args: [np.ones_like(m) for m in draw(specs, *args)],
        "rate halved": lambda specs, *args: draw(
            [dataclasses.replace(s, rate=s.rate / 2) for s in specs], *args),
    }
    for bug, masks in wrong_paths.items():
        monkeypatch.setattr(uncertainty, "_image_masks", masks)
        wrong = mc_dropout_predict(model, x, passes=passes, seed=3, batch_size=5)
        assert not same_distribution(wrong, reference), f"a fast path with {bug} passes"
    monkeypatch.undo()


def test_same_seed_same_numbers_other_seed_differs(model):
    x = images()
    first = mc_dropout_predict(model, x, passes=5, seed=7)
    again = mc_dropout_predict(model, x, passes=5, seed=7)
    other = mc_dropout_predict(model, x, passes=5, seed=8)
    np.testing.assert_array_equal(first.mean, again.mean)
    np.testing.assert_array_equal(first.std, again.std)
    assert np.abs(first.mean - other.mean).max() > 1e-4


def test_rate_zero_head_has_zero_std():
    result = mc_dropout_predict(bn_model(0.0, 0.0), images(), passes=5, keep_samples=True)
    np.testing.assert_array_equal(result.std, 0.0)
    np.testing.assert_array_equal(result.samples, np.broadcast_to(result.mean, (5, 6, N_LABELS)))


def test_masks_keep_one_minus_rate_and_differ_between_passes_and_images(model):
    head = MonteCarloHead(model)
    assert [(s.name, s.rate, s.width) for s in head.dropouts] == [
        ("features_dropout", 0.3, 6), ("head_dropout", 0.5, 16)]
    feature_mask, hidden_mask = head.masks(seed=0, first_index=0, n_images=100, passes=50)
    assert feature_mask.shape == (50, 100, 6) and hidden_mask.shape == (50, 100, 16)
    assert abs(feature_mask.mean() - 0.7) < 0.02
    assert abs(hidden_mask.mean() - 0.5) < 0.02
    assert not np.array_equal(hidden_mask[0], hidden_mask[1])
    assert not np.array_equal(hidden_mask[:, 0], hidden_mask[:, 1])
    # Image i's masks do not depend on the chunk it is drawn in.
    later = head.masks(seed=0, first_index=40, n_images=3, passes=50)
    np.testing.assert_array_equal(later[1], hidden_mask[:, 40:43])


def test_native_keras_dropout_agrees_in_distribution(model):
    """The explicit masks sample the same distribution as Keras's own Dropout layers."""
    head = MonteCarloHead(model)
    x = images(2)
    features = head.features(x)
    passes = 20000
    ours = mc_dropout_predict(model, x, passes=passes)
    # Keras's Dropout draws every element independently, so one call on tiled features
    # gives `passes` independent native passes.
    tiled = np.tile(features, (passes, 1))
    native = keras.ops.convert_to_numpy(_native_head(head, tiled)).reshape(passes, 2, -1)
    np.testing.assert_allclose(ours.mean, native.mean(axis=0), atol=0.01)
    np.testing.assert_allclose(ours.std, native.std(axis=0), atol=0.01)


def _native_head(head: MonteCarloHead, features):
    x = features
    for layer in head.head:
        x = layer(x, training=True) if isinstance(layer, layers.Dropout) else layer(x)
    return x


def test_heads_are_cached_per_model_and_released_with_it():
    model = bn_model()
    assert MonteCarloHead.of(model) is MonteCarloHead.of(model)
    assert MonteCarloHead.of(model) is not MonteCarloHead.of(bn_model())
    released = weakref.ref(model)
    del model
    gc.collect()
    assert released() is None


# --- inputs -------------------------------------------------------------------------------


def test_dataset_inputs_give_the_numpy_result(model):
    x = images(7)
    labels = np.zeros((7, N_LABELS), dtype="float32")
    expected = mc_dropout_predict(model, x, passes=4, seed=1)
    datasets = {
        "(images, labels) batches": tf.data.Dataset.from_tensor_slices((x, labels)).batch(3),
        "image batches": tf.data.Dataset.from_tensor_slices(x).batch(5),
        "single images": tf.data.Dataset.from_tensor_slices(x),
        "uint8 batches": tf.data.Dataset.from_tensor_slices(x.round().astype("uint8")).batch(4),
    }
    for name, data in datasets.items():
        result = mc_dropout_predict(model, data, passes=4, seed=1, batch_size=2)
        atol = 1e-6 if name != "uint8 batches" else 0.05
        np.testing.assert_allclose(result.mean, expected.mean, atol=atol, err_msg=name)
        assert result.samples is None


def test_keep_samples_matches_mean_and_std(model):
    result = mc_dropout_predict(model, images(5), passes=6, batch_size=2, keep_samples=True)
    assert result.samples.shape == (6, 5, N_LABELS) and result.samples.dtype == np.float32
    assert result.mean.dtype == result.std.dtype == np.float32
    np.testing.assert_allclose(result.mean, result.samples.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(result.std, result.samples.std(axis=0), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"data": [1, 2, 3]}, TypeError, "data must be a numpy array"),
        ({"data": np.zeros((4, 8, 8))}, ValueError, r"shape \(N, H, W, C\)"),
        ({"data": np.zeros((0, 8, 8, 3))}, ValueError, "no images"),
        ({"passes": 0}, ValueError, "passes must be an int >= 1"),
        ({"seed": -1}, ValueError, "seed must be an int >= 0"),
        ({"batch_size": 2.5}, ValueError, "batch_size must be an int"),
    ],
)
def test_bad_arguments_are_named(model, kwargs, error, match):
    arguments = {"data": images(2), **kwargs}
    with pytest.raises(error, match=match):
        mc_dropout_predict(model, **arguments)


def test_unsupported_head_layer_is_refused():
    inputs = keras.Input((4,))
    x = layers.Identity(name="features")(inputs)
    x = layers.Dropout(0.5, noise_shape=(1, 4), name="shared_dropout")(x)
    outputs = layers.Dense(N_LABELS, activation="sigmoid", name="predictions")(x)
    with pytest.raises(ValueError, match="shared_dropout.*noise_shape"):
        MonteCarloHead(keras.Model(inputs, outputs))


# --- referral and the predictions table ---------------------------------------------------


def _result() -> MCResult:
    mean = np.tile(np.linspace(0, 1, N_LABELS, dtype="float32"), (2, 1))
    std = np.zeros((2, N_LABELS), dtype="float32")
    std[0, 3] = 0.2
    std[0, 4] = 0.1  # exactly at the threshold: not referred (std > threshold)
    return MCResult(samples=None, mean=mean, std=std)


def test_refer_is_std_above_threshold():
    refer = _result().refer(0.1)
    assert refer.dtype == bool and refer.shape == (2, N_LABELS)
    assert refer.sum() == 1 and refer[0, 3]
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        _result().refer(-0.1)


def test_predictions_table_layout():
    table = predictions_table(["a.png", "b.png"], _result(), threshold=0.1)
    expected_columns = ["Image Index"] + [
        f"{label}_{kind}" for label in LABELS for kind in ("mean", "std", "refer")
    ] + ["refer_any"]
    assert list(table.columns) == expected_columns
    assert table["Image Index"].tolist() == ["a.png", "b.png"]
    assert table["refer_any"].tolist() == [1, 0]
    assert table["Edema_refer"].tolist() == [1, 0] and table["Effusion_refer"].tolist() == [0, 0]
    assert table["Edema_std"].iloc[0] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="3 names and 14 labels"):
        predictions_table(["a", "b", "c"], _result(), threshold=0.1)


# --- layers="all": every Dropout layer, backbone ones included ----------------------------


def _batchnorm_statistics(model: keras.Model) -> list[np.ndarray]:
    def walk(container):
        for layer in container.layers:
            if isinstance(layer, keras.Model):
                yield from walk(layer)
            elif isinstance(layer, layers.BatchNormalization):
                yield layer

    return [np.array(v) for bn in walk(model) for v in (bn.moving_mean, bn.moving_variance)]


@pytest.fixture(scope="module")
def efficientnet_without_head_dropout() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build("efficientnetb0", image_size=32, dropout=0.0)


def test_all_samples_the_backbone_dropout_that_head_leaves_off(efficientnet_without_head_dropout):
    """EfficientNetB0 with head dropout 0: its stochastic-depth layers are the only noise."""
    model = efficientnet_without_head_dropout
    backbone_drops = [layer for layer in dropout_layers(model)
                      if layer.name not in ("features_dropout", "head_dropout")]
    assert len(backbone_drops) == 9 and all(layer.rate > 0 for layer in backbone_drops)
    x = images(3, size=32)
    statistics = _batchnorm_statistics(model)
    inference = keras.ops.convert_to_numpy(model(x, training=False))

    head = mc_dropout_predict(model, x, passes=4, layers="head")
    every = mc_dropout_predict(model, x, passes=4, seed=1, layers="all", keep_samples=True)
    np.testing.assert_array_equal(head.std, 0.0)  # head mode never samples the backbone
    # Probabilities vary across passes (near 0.5 at random init, so some only in the last
    # float32 bits: the spread is measured at the features below).
    assert every.std.max() > 0 and (every.std > 0).mean() > 0.25
    assert not np.array_equal(every.samples[0], every.samples[1])
    # Random-init EfficientNet maps are ~1e-7, so compare the spread where it arises.
    features = keras.Model(model.input, model.get_layer("features").output)
    with sampling_every_dropout(model, seed=1):
        sampled = [keras.ops.convert_to_numpy(features(x, training=False)) for _ in range(4)]
    deterministic = keras.ops.convert_to_numpy(features(x, training=False))
    relative = np.abs(np.stack(sampled) - deterministic).max() / np.abs(deterministic).max()
    assert relative > 0.05
    # BatchNorm ran in inference mode: moving statistics untouched, and the layers' own
    # `call` is back (the model is deterministic again).
    for before, after in zip(statistics, _batchnorm_statistics(model), strict=True):
        np.testing.assert_array_equal(before, after)
    assert all("call" not in vars(layer) for layer in dropout_layers(model))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x, training=False)), inference)

    again = mc_dropout_predict(model, x, passes=4, seed=1, layers="all")
    np.testing.assert_array_equal(again.mean, every.mean)  # reproducible from the seed


def test_all_varies_only_through_dropout(efficientnet_without_head_dropout):
    """Every rate set to 0: the T passes are the inference-mode model, std exactly 0."""
    model = efficientnet_without_head_dropout
    x = images(3, size=32)
    rates = {layer.name: layer.rate for layer in dropout_layers(model)}
    try:
        for layer in dropout_layers(model):
            layer.rate = 0.0
        result = mc_dropout_predict(model, x, passes=3, layers="all")
    finally:
        for layer in dropout_layers(model):
            layer.rate = rates[layer.name]
    np.testing.assert_array_equal(result.std, 0.0)
    np.testing.assert_allclose(result.mean, keras.ops.convert_to_numpy(model(x, training=False)),
                               atol=1e-6)


def test_all_agrees_with_head_where_every_dropout_is_in_the_head(model):
    """bn_model's dropout layers are all in its head: both scopes sample one distribution
    (BatchNorm in inference mode in both: far from batch statistics, see bn_model)."""
    x = images(2)
    statistics = _batchnorm_statistics(model)
    passes = 3000
    head = mc_dropout_predict(model, x, passes=passes, seed=0, layers="head")
    every = mc_dropout_predict(model, x, passes=passes, seed=0, layers="all")
    # Two independent Monte-Carlo estimates of one mean: each element may differ by chance by
    # a few standard errors of the difference (a fixed 0.01 failed 2 of 28 elements at
    # ~2.8 standard errors in CI). 5 standard errors: a false alarm about once in 60,000 runs.
    standard_error = np.sqrt((head.std**2 + every.std**2) / passes)
    assert np.all(np.abs(every.mean - head.mean) <= 5 * standard_error + 1e-6)
    np.testing.assert_allclose(every.std, head.std, rtol=0.1, atol=0.003)
    assert head.std.max() > 0.02
    for before, after in zip(statistics, _batchnorm_statistics(model), strict=True):
        np.testing.assert_array_equal(before, after)


def test_layers_must_be_head_or_all(model):
    with pytest.raises(ValueError, match="layers = 'backbone'; allowed: 'head', 'all'"):
        mc_dropout_predict(model, images(), passes=2, layers="backbone")
