"""`weights=DIRECTORY`: offline ImageNet weights for every backbone, the fusion model's two.

The test writes its own "ImageNet" files: randomly initialised keras.applications networks
saved in the legacy `.h5` layout of Keras's downloads, under Keras's file names.
"""

from __future__ import annotations

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

from cxr.models import build
from cxr.models.backbones import APPLICATIONS
from cxr.models.layers import IMAGENET_STD

SMALL = 32


def write_notop_file(directory, name: str) -> keras.Model:
    """A random-init application saved as Keras's `<name>` no-top file; returns it."""
    constructor, file_name = APPLICATIONS[name]
    keras.utils.set_random_seed(hash(name) % 1000)
    source = constructor(include_top=False, weights=None, input_shape=(SMALL, SMALL, 3))
    with h5py.File(directory / file_name, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, source)
    return source


def assert_same_weights(trunk: keras.Model, source: keras.Model) -> int:
    """Every weighted layer of `trunk` equals the same-named layer of `source`; the count."""
    compared = 0
    for layer in trunk.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.Normalization):  # auto-named: match by type
            norm = next(x for x in source.layers if isinstance(x, keras.layers.Normalization))
            expected = norm.get_weights()
        else:
            expected = source.get_layer(layer.name).get_weights()
        if isinstance(layer, keras.layers.Normalization):
            # EfficientNet's ImageNet input rescaling folded into the variance (as for
            # weights="imagenet"): var / (1 / sqrt(std))**2 = var * std.
            mean, variance, count = expected
            expected = [mean, variance * np.asarray(IMAGENET_STD), count]
        for got, want in zip(layer.get_weights(), expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=layer.name)
        compared += 1
    return compared


@pytest.mark.slow
def test_fusion_loads_both_backbones_from_a_directory(tmp_path):
    dense = write_notop_file(tmp_path, "densenet121")
    efficient = write_notop_file(tmp_path, "efficientnetb3")
    model = build("fusion", image_size=SMALL, weights=str(tmp_path))
    assert assert_same_weights(model.get_layer("densenet121_trunk"), dense) > 100
    assert assert_same_weights(model.get_layer("efficientnetb3_trunk"), efficient) > 100
    # A random-init build differs: the weights really came from the files.
    fresh = build("fusion", image_size=SMALL)
    first = next(w for w in fresh.get_layer("densenet121_trunk").weights if "kernel" in w.path)
    loaded = model.get_layer("densenet121_trunk").get_layer(first.path.split("/")[-2])
    assert not np.allclose(np.asarray(first), loaded.get_weights()[0])


def test_single_backbone_model_loads_from_the_same_directory(tmp_path):
    dense = write_notop_file(tmp_path, "densenet121")
    model = build("densenet121", image_size=SMALL, weights=tmp_path)
    assert assert_same_weights(model.get_layer("densenet121"), dense) > 100


def test_missing_file_names_the_backbone_the_file_and_the_directory(tmp_path):
    (tmp_path / APPLICATIONS["densenet121"][1]).write_bytes(b"")
    with pytest.raises(FileNotFoundError) as error:
        build("fusion", image_size=SMALL, weights=str(tmp_path))
    message = str(error.value)
    assert "efficientnetb3 needs efficientnetb3_notop.h5" in message
    assert str(tmp_path.resolve()) in message and "'fusion'" in message
    assert "densenet121 needs" not in message  # that one is there
    assert "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5" in message  # listed as held
    with pytest.raises(ValueError, match="simple_cnn.*no pretrained backbone"):
        build("simple_cnn", image_size=SMALL, weights=tmp_path)


def test_a_file_that_does_not_fit_names_the_backbone(tmp_path):
    with h5py.File(tmp_path / APPLICATIONS["efficientnetb0"][1], "w") as handle:
        handle.attrs["layer_names"] = [b"nothing"]
    with pytest.raises(ValueError, match="does not fit backbone 'efficientnetb0'"):
        build("efficientnetb0", image_size=SMALL, weights=tmp_path)
