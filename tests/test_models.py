"""cxr.models: parameter counts, preprocessing, forward passes, saving, weights, freezing.

Forward passes run on tiny images (32 px); the 224 px checks only build models.
"""

from __future__ import annotations

import json
import re
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format
from keras.src.utils import file_utils

from cxr.labels import N_LABELS
from cxr.models import (
    GRADCAM_LAYER,
    MODEL_NAMES,
    ImageNetNormalization,
    SpatialSelfAttention,
    apply_head,
    backbone_layers,
    build,
    load_weights_file,
    model_options,
    preprocessing_layer,
    set_backbone_trainable,
    split_at_features,
)
from cxr.models.saving import (
    FIXED_DATE_SAVED,
    FIXED_DATE_TIME,
    make_reproducible,
    renumber_shared_objects,
    save_model,
)

SMALL = 32


def n_trainable(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    # Eager call: model.predict would trace a tf.function per model (seconds for fusion).
    return keras.ops.convert_to_numpy(model(x, training=False))


def images(n: int = 2, size: int = SMALL, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


# fusion builds the two largest backbones; its tests take seconds each.
ALL_MODELS = [pytest.param(n, marks=pytest.mark.slow) if n == "fusion" else n for n in MODEL_NAMES]


class SmallModels(dict):
    """Models at 32 px, built on first use and shared by the tests of this module."""

    def __missing__(self, name: str) -> keras.Model:
        model = build(name, image_size=SMALL)
        if name == "fusion":
            # gamma starts at 0 (attention off); switch it on so tests exercise attention.
            model.get_layer("attention").gamma.assign(0.5)
        self[name] = model
        return model


@pytest.fixture(scope="module")
def small_models() -> SmallModels:
    return SmallModels()


# --- parameter counts at 224 (build only, no forward pass) -----------------------------


@pytest.mark.parametrize(
    ("name", "freeze", "total", "trainable"),
    [
        ("simple_cnn", False, 129_870, 129_870),
        ("densenet121", True, 7_569_486, 531_982),
        ("efficientnetb0", True, 4_712_625, 663_054),
        pytest.param("fusion", False, 10_638_528, 10_521_273, marks=pytest.mark.slow),
    ],
)
def test_parameter_counts_at_224(name, freeze, total, trainable):
    model = build(name, image_size=224, freeze_backbone=freeze)
    assert model.count_params() == total
    assert n_trainable(model) == trainable
    if name == "fusion":
        assert total - trainable == 117_255
        assert model.get_layer("densenet121_trunk").output.shape[1:] == (7, 7, 1024)
        assert model.get_layer("efficientnetb3_trunk").output.shape[1:] == (14, 14, 816)
        assert model.get_layer("fusion_concat").output.shape[1:] == (14, 14, 512)


# --- preprocessing ---------------------------------------------------------------------


def test_imagenet_normalization_matches_densenet_preprocess_input():
    x = images(3, 8)
    layer = preprocessing_layer("densenet121")
    assert isinstance(layer, ImageNetNormalization)
    expected = keras.applications.densenet.preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)
    assert layer.count_params() == 0
    clone = ImageNetNormalization.from_config(layer.get_config())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), expected, atol=1e-5)


def test_efficientnet_gets_raw_pixels_and_simple_cnn_gets_zero_centred_pixels():
    x = images(2, 8)
    for name in ("efficientnetb0", "efficientnetb3"):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(preprocessing_layer(name)(x)), x)
    scaled = keras.ops.convert_to_numpy(preprocessing_layer("simple_cnn")(x))
    np.testing.assert_allclose(scaled, x / 127.5 - 1.0, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="unknown backbone_name 'resnet50'"):
        preprocessing_layer("resnet50")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("simple_cnn", {"rescale": keras.layers.Rescaling}),
        ("densenet121", {"densenet121_preprocessing": ImageNetNormalization}),
        ("efficientnetb0", {"efficientnetb0_preprocessing": keras.layers.Identity}),
        pytest.param(
            "fusion",
            {
                "densenet121_preprocessing": ImageNetNormalization,
                "efficientnetb3_preprocessing": keras.layers.Identity,
            },
            marks=pytest.mark.slow,
        ),
    ],
)
def test_models_take_raw_pixels_through_their_own_preprocessing(small_models, name, expected):
    model = small_models[name]
    for layer_name, layer_type in expected.items():
        layer = model.get_layer(layer_name)
        assert type(layer) is layer_type
        assert layer.input is model.input  # straight from the raw 0-255 image
        assert layer.count_params() == 0


# --- structure, forward pass, head split --------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_pass_gives_14_probabilities(small_models, name):
    model = small_models[name]
    out = keras.ops.convert_to_numpy(model(images(3), training=False))
    assert out.shape == (3, N_LABELS)
    assert np.all((out > 0) & (out < 1))
    assert model.output_names == ["predictions"] or model.layers[-1].name == "predictions"
    assert model.get_layer("predictions").activation is keras.activations.sigmoid


@pytest.mark.parametrize("name", ALL_MODELS)
def test_feature_split_reproduces_the_model(small_models, name):
    model = small_models[name]
    x = images(2)
    feature_model, head = split_at_features(model)
    assert head and all(
        isinstance(layer, keras.layers.Dropout | keras.layers.Dense) for layer in head
    )
    assert any(isinstance(layer, keras.layers.Dropout) for layer in head)
    assert head[-1].name == "predictions"
    features = feature_model(x)
    deterministic = apply_head(model, features, training_dropout=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(deterministic), predict(model, x), atol=1e-6
    )
    keras.utils.set_random_seed(1)
    passes = [
        keras.ops.convert_to_numpy(apply_head(model, features, training_dropout=True))
        for _ in range(4)
    ]
    assert np.std(passes, axis=0).max() > 0


@pytest.mark.parametrize("name", ALL_MODELS)
def test_gradcam_layer_is_a_spatial_map_with_gradients(small_models, name):
    model = small_models[name]
    feature_map = model.get_layer(GRADCAM_LAYER[name]).output
    assert len(feature_map.shape) == 4
    gradcam_model = keras.Model(model.input, [feature_map, model.output])
    with tf.GradientTape() as tape:
        maps, probabilities = gradcam_model(images(1))
        score = probabilities[:, 0]
    grads = tape.gradient(score, maps)
    assert grads is not None and grads.shape == maps.shape
    grads, maps = keras.ops.convert_to_numpy(grads), keras.ops.convert_to_numpy(maps)
    assert np.abs(grads).max() > 0, "no gradient reaches the Grad-CAM layer"
    assert maps.std() > 0, "the Grad-CAM layer's output is constant"


# --- saving -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_MODELS)
def test_keras_file_round_trip(small_models, name, tmp_path):
    model = small_models[name]
    path = tmp_path / f"{name}.keras"
    save_model(model, path)  # Keras' save, archive rewritten without save-time variation
    loaded = keras.models.load_model(path)  # safe_mode=True: no Lambda, all registered
    x = images(2)
    np.testing.assert_allclose(predict(loaded, x), predict(model, x), rtol=0, atol=1e-6)
    assert [layer.name for layer in backbone_layers(loaded)] == [
        layer.name for layer in backbone_layers(model)
    ]


@pytest.mark.parametrize("name", ["simple_cnn", "densenet121"])
def test_save_model_is_byte_reproducible(name, tmp_path):
    # Two builds from one seed, as two training processes would make them (a fresh session:
    # Keras numbers auto-named layers per session): equal weights, different Python objects
    # (Keras writes their id() into config.json as shared_object_id) and, a second apart, a
    # new date_saved.
    paths = []
    for attempt in range(2):
        keras.backend.clear_session()
        keras.utils.set_random_seed(7)
        path = tmp_path / f"{attempt}" / "model.keras"
        save_model(build(name, image_size=SMALL), path)
        paths.append(path)
        if attempt == 0:
            time.sleep(1.1)
    first, second = (path.read_bytes() for path in paths)
    assert first == second
    with zipfile.ZipFile(paths[0]) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == [
            "metadata.json", "config.json", "model.weights.h5"]
        assert {info.date_time for info in infos} == {FIXED_DATE_TIME}
        metadata = json.loads(archive.read("metadata.json"))
        assert metadata == {"keras_version": keras.__version__, "date_saved": FIXED_DATE_SAVED}
        ids = re.findall(rb'"shared_object_id": (\d+)', archive.read("config.json"))
    assert ids, "the config shares no object: nothing renumbered, nothing tested"
    assert sorted({int(i) for i in ids}) == list(range(1, len(set(ids)) + 1))


def test_renumber_shared_objects_keeps_which_objects_are_shared():
    config = (b'{"a": {"shared_object_id": 140001}, "b": {"shared_object_id": 139999}, '
              b'"c": {"shared_object_id": 140001}}')
    assert renumber_shared_objects(config) == (
        b'{"a": {"shared_object_id": 1}, "b": {"shared_object_id": 2}, '
        b'"c": {"shared_object_id": 1}}')


def test_make_reproducible_rejects_an_archive_that_is_not_a_keras_model(tmp_path):
    source = tmp_path / "other.keras"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(ValueError, match=r"other\.keras: no metadata\.json in the archive"):
        make_reproducible(source, tmp_path / "model.keras")
    assert list(tmp_path.iterdir()) == [source]  # refused before anything was written
    # failing while the new archive is written: the temporary file is removed
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("metadata.json", b"{not json")
        archive.writestr("config.json", b"{}")
    with pytest.raises(ValueError, match=r"broken\.keras: metadata\.json is not JSON"):
        make_reproducible(broken, tmp_path / "model.keras")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["broken.keras", "other.keras"]
    with pytest.raises(ValueError, match=r"writes a \.keras archive; got '.*model\.h5'"):
        save_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]),
                   tmp_path / "model.h5")


# --- weights="PATH" / "imagenet" ------------------------------------------------------------


@pytest.mark.parametrize("name", ["simple_cnn", pytest.param("fusion", marks=pytest.mark.slow)])
def test_full_model_weights_file(small_models, name, tmp_path):
    model = small_models[name]
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(path)
    rebuilt = build(name, image_size=SMALL, weights=str(path))
    x = images(2)
    np.testing.assert_array_equal(predict(rebuilt, x), predict(model, x))


@pytest.mark.slow
def test_full_and_backbone_only_weights_files(small_models, tmp_path):
    model = small_models["densenet121"]
    full, backbone_only = tmp_path / "full.weights.h5", tmp_path / "backbone.weights.h5"
    model.save_weights(full)
    backbone_layers(model)[0].save_weights(backbone_only)
    x = images(2)

    rebuilt = build("densenet121", image_size=SMALL, weights=full)
    np.testing.assert_array_equal(predict(rebuilt, x), predict(model, x))

    fresh = build("densenet121", image_size=SMALL)
    assert load_weights_file(fresh, backbone_only) == "backbone"
    feature_model, _ = split_at_features(model)
    fresh_features, _ = split_at_features(fresh)
    np.testing.assert_array_equal(fresh_features(x), feature_model(x))


def test_weights_file_errors(small_models, tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        build("simple_cnn", image_size=SMALL, weights=str(missing))

    other = tmp_path / "effnet.weights.h5"
    small_models["efficientnetb0"].save_weights(other)
    with pytest.raises(
        ValueError, match=r"effnet\.weights\.h5.*does not fit model 'cxr_densenet121'"
    ):
        build("densenet121", image_size=SMALL, weights=other)

    # A failed load leaves the model as it was.
    target = build("simple_cnn", image_size=SMALL)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(ValueError, match="does not fit model 'simple_cnn'"):
        load_weights_file(target, other)
    for old, new in zip(before, target.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_imagenet_download_failure_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(RuntimeError) as info:
        build("densenet121", image_size=SMALL, weights="imagenet")
    message = str(info.value)
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "~/.keras/models/" in message and "KERAS_HOME" in message
    with pytest.raises(ValueError, match="not available for simple_cnn"):
        build("simple_cnn", image_size=SMALL, weights="imagenet")


@pytest.mark.slow
def test_imagenet_efficientnet_equals_keras_with_a_weights_file_of_one_layout(
    monkeypatch, tmp_path
):
    """Keras adds a Rescaling to EfficientNet for ImageNet weights only; cxr folds it into the
    Normalization layer, so ImageNet and random-init models share one layout and files."""
    source = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=(SMALL, SMALL, 3)
    )
    stats = [np.array([0.4, 0.5, 0.6], "float32"), np.full(3, 0.05, "float32"), np.array(0)]
    normalization = next(
        layer for layer in source.layers if isinstance(layer, keras.layers.Normalization)
    )
    normalization.set_weights(stats)
    notop = tmp_path / "efficientnetb0_notop.h5"
    with h5py.File(notop, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    monkeypatch.setattr(file_utils, "get_file", lambda *args, **kwargs: str(notop))

    reference = keras.applications.EfficientNetB0(
        include_top=False, weights="imagenet", input_shape=(SMALL, SMALL, 3)
    )
    stem = keras.Model(reference.input, reference.get_layer("stem_activation").output)
    x = images(2)
    expected = keras.ops.convert_to_numpy(stem(x))

    def stem_of(model):
        backbone = backbone_layers(model)[0]
        return keras.Model(backbone.input, backbone.get_layer("stem_activation").output)(x)

    pretrained = build("efficientnetb0", image_size=SMALL, weights="imagenet")
    from_legacy_file = build("efficientnetb0", image_size=SMALL, weights=notop)
    for model in (pretrained, from_legacy_file):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(stem_of(model)), expected, atol=1e-5)

    full = tmp_path / "pretrained.weights.h5"
    pretrained.save_weights(full)
    rebuilt = build("efficientnetb0", image_size=SMALL, weights=full)
    np.testing.assert_array_equal(predict(rebuilt, x), predict(pretrained, x))


# --- freezing -------------------------------------------------------------------------------


def test_frozen_backbone_keeps_batchnorm_statistics_and_trains_the_head():
    model = build("densenet121", image_size=SMALL, freeze_backbone=True)
    (backbone,) = backbone_layers(model)
    assert backbone.name == "densenet121"
    assert not backbone.trainable_weights
    assert n_trainable(model) == sum(
        int(np.prod(w.shape))
        for name in ("head_dense", "predictions")
        for w in model.get_layer(name).weights
    )
    bn = backbone.get_layer("conv1_bn")
    moving_mean = np.array(bn.moving_mean)
    head_kernel = np.array(model.get_layer("predictions").kernel)

    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    model.train_on_batch(images(4), np.ones((4, N_LABELS), "float32"))
    np.testing.assert_array_equal(np.array(bn.moving_mean), moving_mean)
    assert not np.array_equal(np.array(model.get_layer("predictions").kernel), head_kernel)

    set_backbone_trainable(model, True, freeze_batchnorm=True)
    assert backbone.get_layer("conv1_conv").trainable and not bn.trainable
    set_backbone_trainable(model, True)
    assert bn.trainable
    non_trainable = model.count_params() - n_trainable(model)
    assert non_trainable == 83_648  # only the BatchNormalization moving statistics


@pytest.mark.slow
def test_fusion_freezes_both_trunks():
    model = build("fusion", image_size=SMALL, freeze_backbone=True)
    assert sorted(layer.name for layer in backbone_layers(model)) == [
        "densenet121_trunk",
        "efficientnetb3_trunk",
    ]
    assert all(not layer.trainable_weights for layer in backbone_layers(model))
    assert model.get_layer("attention").trainable_weights


# --- the fusion attention block ---------------------------------------------------------------


def test_spatial_self_attention_math():
    layer = SpatialSelfAttention()
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), x)  # gamma starts at 0
    assert layer.count_params() == 3 * (5 * 5 + 5) + 1

    layer.gamma.assign(0.7)

    def project(conv):
        kernel, bias = (np.array(v) for v in conv.weights)
        return x.reshape(2, 12, 5) @ kernel.reshape(5, -1) + bias

    q, k, v = project(layer.query), project(layer.key), project(layer.value)
    logits = q @ k.transpose(0, 2, 1)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    expected = 0.7 * (weights @ v).reshape(x.shape) + x
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, atol=1e-5)

    clone = SpatialSelfAttention.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# --- argument validation ----------------------------------------------------------------------


def test_build_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model name 'resnet'"):
        build("resnet")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['dropuot'\]"):
        build("simple_cnn", image_size=SMALL, dropuot=0.3)
    with pytest.raises(ValueError, match="image_size=16.*densenet121.*>= 32"):
        build("densenet121", image_size=16)
    with pytest.raises(ValueError, match="image_size=8.*simple_cnn"):
        build("simple_cnn", image_size=8)
    with pytest.raises(ValueError, match="cut layer 'no_such_layer'"):
        build("fusion", image_size=SMALL, dense_cut="no_such_layer")
    with pytest.raises(ValueError, match="dropout"):
        build("densenet121", image_size=SMALL, dropout=1.5)
    assert set(model_options("fusion")) >= {"dense_cut", "efficient_cut", "proj_channels"}
