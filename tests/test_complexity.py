"""cxr.complexity.forward_macs: counted by hand, nested, shared, and the published sizes."""

import keras
import pytest
from keras import layers

from cxr.complexity import forward_macs


def _hand_model() -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    x = layers.Conv2D(4, 3, padding="same")(inputs)         # 8*8 * 4 * (3*3*2)  = 4,608
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)  # 4*4 * 4 * 3*3 = 576
    x = layers.Conv2D(6, 1, groups=2)(x)                    # 4*4 * 6 * (1*1*4/2) = 192
    x = layers.SeparableConv2D(5, 3)(x)                     # 2*2 * 6 * (3*3 + 5) = 336
    x = layers.BatchNormalization()(x)                      # not counted
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(3)(x)                            # 5 * 3 = 15
    return keras.Model(inputs, outputs)


HAND_MACS = 4608 + 576 + 192 + 336 + 15


def test_counts_each_kind_of_layer_as_worked_out_by_hand():
    assert forward_macs(_hand_model()) == HAND_MACS


def test_a_nested_model_counts_once_and_a_shared_layer_once_per_call():
    inner = _hand_model()
    inputs = keras.Input((8, 8, 2))
    outer = keras.Model(inputs, layers.Dense(2)(inner(inputs)))
    assert forward_macs(outer) == HAND_MACS + 3 * 2

    shared = layers.Dense(4)
    a, b = keras.Input((5,)), keras.Input((5,))
    twice = keras.Model([a, b], layers.Add()([shared(a), shared(b)]))
    assert forward_macs(twice) == 2 * 5 * 4


def test_an_unknown_spatial_size_is_an_error_not_a_guess():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Conv2D(2, 3)(inputs))
    with pytest.raises(ValueError, match="unknown dimension"):
        forward_macs(model)


@pytest.mark.parametrize("application, size, published", [
    (keras.applications.DenseNet121, 224, 2.83e9),     # torchvision's table: 2.83 GMACs
    (keras.applications.EfficientNetB0, 224, 0.39e9),  # Tan and Le 2019, table 2: 0.39B
])
def test_the_keras_applications_match_their_published_sizes(application, size, published):
    model = application(weights=None, input_shape=(size, size, 3))
    assert forward_macs(model) == pytest.approx(published, rel=0.015)
