import numpy as np
import pytest

from cxr.models import build, prior_logits, set_output_bias


def test_prior_logits_are_the_log_odds_of_the_training_prevalence():
    labels = np.zeros((100, 3))
    labels[:10, 0] = 1   # 10%
    labels[:50, 1] = 1   # 50%
    bias = prior_logits(labels)
    assert bias[0] == pytest.approx(np.log(0.1 / 0.9), abs=1e-6)
    assert bias[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(bias[2]) and bias[2] < -9  # no positives: clipped, finite, very negative


def test_a_prior_biased_model_predicts_the_prevalence_before_training():
    import keras

    # Seeded: the random kernels move the mean by up to ~0.09 from the prior, depending on the
    # global random state the tests before this one leave behind (seeds 0-7: 0.03-0.08).
    keras.utils.set_random_seed(0)
    model = build("simple_cnn", image_size=32)
    labels = np.zeros((200, 14))
    for k in range(14):
        labels[: 2 + 5 * k, k] = 1
    set_output_bias(model, prior_logits(labels))
    # Zero images give zero features after the ReLUs only approximately: compare the mean over
    # noise images, which a bias left at 0 (p = 0.5) would miss by far.
    images = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    mean = np.asarray(model(images, training=False)).mean(axis=0)
    assert np.allclose(mean, labels.mean(axis=0), atol=0.08)


def test_set_output_bias_checks_the_shape():
    model = build("simple_cnn", image_size=32)
    with pytest.raises(ValueError, match="one value per finding"):
        set_output_bias(model, np.zeros(3))


def test_batchnorm_momentum_option_reaches_every_backbone_batchnorm_and_is_saved(tmp_path):
    import keras

    from cxr.models.backbones import _walk_layers, backbone_layers

    model = build("efficientnetb0", image_size=32, batchnorm_momentum=0.9)
    norms = [layer for backbone in backbone_layers(model) for layer in _walk_layers(backbone)
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == 0.9 for layer in norms)
    model.save(tmp_path / "m.keras")
    import cxr.models.layers  # noqa: F401

    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    reloaded = [layer for backbone in backbone_layers(loaded) for layer in _walk_layers(backbone)
                if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(reloaded) == len(norms) and all(layer.momentum == 0.9 for layer in reloaded)
    default = build("efficientnetb0", image_size=32)
    assert all(layer.momentum == 0.99 for backbone in backbone_layers(default)
               for layer in _walk_layers(backbone)
               if isinstance(layer, keras.layers.BatchNormalization))
    with pytest.raises(ValueError, match="unknown option"):
        build("simple_cnn", image_size=32, batchnorm_momentum=0.9)


def _stochastic_depth_rates(model):
    import keras

    from cxr.models.backbones import _walk_layers, backbone_layers

    return [layer.rate for backbone in backbone_layers(model) for layer in _walk_layers(backbone)
            if isinstance(layer, keras.layers.Dropout) and layer.name.endswith("_drop")]


def test_stochastic_depth_option_rescales_efficientnet_drop_rates_and_is_saved(tmp_path):
    import keras

    import cxr.models.layers  # noqa: F401

    default = _stochastic_depth_rates(build("efficientnetb0", image_size=32))
    assert len(default) == 9 and 0 < max(default) < 0.2  # Keras: 0.2 * b / blocks
    off = build("efficientnetb0", image_size=32, stochastic_depth=0.0)
    assert _stochastic_depth_rates(off) == [0.0] * 9
    doubled = _stochastic_depth_rates(build("efficientnetb0", image_size=32,
                                            stochastic_depth=0.4))
    assert doubled == pytest.approx([2 * rate for rate in default])
    off.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert _stochastic_depth_rates(loaded) == [0.0] * 9
    # the fusion model's EfficientNetB3 trunk has its own 13; DenseNet121 has none
    assert _stochastic_depth_rates(build("fusion", image_size=32, stochastic_depth=0.0)) \
        == [0.0] * 13
    with pytest.raises(ValueError, match="unknown option"):
        build("densenet121", image_size=32, stochastic_depth=0.0)
    with pytest.raises(ValueError, match="stochastic_depth"):
        build("efficientnetb0", image_size=32, stochastic_depth=1.5)


def test_zero_init_residual_starts_efficientnet_blocks_as_the_identity():
    import keras

    from cxr.models.backbones import backbone_layers

    keras.utils.set_random_seed(3)
    plain = build("efficientnetb0", image_size=32)
    keras.utils.set_random_seed(3)
    zeroed = build("efficientnetb0", image_size=32, zero_init_residual=True)
    backbone = backbone_layers(zeroed)[0]
    residual = [layer.name[: -len("_add")] for layer in backbone.layers
                if layer.name.endswith("_add")]
    assert len(residual) == 9  # EfficientNetB0: blocks 2b, 3b, 4b-c, 5b-c, 6b-d
    changed = {f"{name}_project_bn" for name in residual}
    for before, after in zip(backbone_layers(plain)[0].layers, backbone.layers, strict=True):
        for a, b in zip(before.weights, after.weights, strict=True):
            if after.name in changed and b.name == "gamma":
                assert not np.any(np.asarray(b)) and np.all(np.asarray(a) == 1.0)
            else:  # the same random draws everywhere else
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # each residual block adds exactly nothing at initialisation (inference mode)
    probe = keras.Model(backbone.input, [backbone.get_layer("block6a_project_bn").output,
                                         backbone.get_layer("block6d_add").output])
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    entering, leaving = probe(images, training=False)
    np.testing.assert_allclose(np.asarray(leaving), np.asarray(entering), rtol=0, atol=1e-6)
    assert np.ptp(np.asarray(entering)) > 0  # not a trivially constant map
    # fusion's EfficientNetB3 trunk has its own residual blocks; DenseNet121 has none
    fused = build("fusion", image_size=32, zero_init_residual=True)
    trunk = next(b for b in backbone_layers(fused) if b.name.startswith("efficientnet"))
    adds = [layer.name[: -len("_add")] for layer in trunk.layers if layer.name.endswith("_add")]
    assert adds and all(not np.any(np.asarray(trunk.get_layer(f"{name}_project_bn").gamma))
                        for name in adds)
    with pytest.raises(ValueError, match="unknown option"):
        build("densenet121", image_size=32, zero_init_residual=True)
    with pytest.raises(ValueError, match="random initialisation"):
        build("efficientnetb0", image_size=32, weights="imagenet", zero_init_residual=True)
    with pytest.raises(ValueError, match="zero_init_residual"):
        build("efficientnetb0", image_size=32, zero_init_residual="yes")
