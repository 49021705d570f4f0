import math

import keras
import numpy as np
import pytest

from cxr.training.losses import WeightedBinaryCrossentropy, build_loss, chexnet_weights


def focal_by_hand(y, p, alpha, gamma):
    p_t = p if y == 1 else 1 - p
    alpha_t = alpha if y == 1 else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 0.0), (0.25, 5.0)])
def test_focal_matches_the_formula(alpha, gamma):
    y = np.array([[1, 0, 1, 0]], np.float32)
    p = np.array([[0.9, 0.2, 0.3, 0.7]], np.float32)
    expected = np.mean([focal_by_hand(yi, pi, alpha, gamma) for yi, pi in zip(y[0], p[0],
                                                                             strict=True)])
    got = float(build_loss("focal", alpha=alpha, gamma=gamma)(y, p))
    assert got == pytest.approx(expected, rel=1e-4)


def test_focal_single_hand_computed_value():
    # y=1, p=0.9: -0.25 * 0.1**2 * ln 0.9 = 2.6340e-4
    got = float(build_loss("focal")(np.array([[1.0]]), np.array([[0.9]])))
    assert got == pytest.approx(0.25 * 0.01 * -math.log(0.9), rel=1e-4)
    assert got == pytest.approx(2.634e-4, rel=1e-3)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradients_stay_finite_on_saturated_predictions(gamma):
    import tensorflow as tf

    loss = build_loss("focal", gamma=gamma)
    y = tf.constant([[1.0, 0.0, 1.0, 0.0]])
    p = tf.Variable([[1.0, 0.0, 0.0, 1.0]])  # right and sure, wrong and sure
    with tf.GradientTape() as tape:
        value = loss(y, p)
    assert np.isfinite(float(value))
    assert np.isfinite(tape.gradient(value, p).numpy()).all()


def test_focal_gamma_zero_is_alpha_weighted_bce():
    y, p = np.array([[1.0, 0.0, 1.0]]), np.array([[0.8, 0.3, 0.6]])
    expected = np.mean([-0.25 * math.log(0.8), -0.75 * math.log(0.7), -0.25 * math.log(0.6)])
    assert float(build_loss("focal", gamma=0.0)(y, p)) == pytest.approx(expected, rel=1e-5)


def test_focal_equals_keras_class_balanced_focal_away_from_saturation():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (16, 14)).astype(np.float32)
    p = rng.uniform(0.01, 0.99, (16, 14)).astype(np.float32)
    keras_focal = keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25,
                                                       gamma=2.0)
    assert float(build_loss("focal")(y, p)) == pytest.approx(float(keras_focal(y, p)), rel=1e-5)


def test_focal_down_weights_easy_examples_relative_to_bce():
    y = np.array([[1.0, 0.0]])
    easy, hard = np.array([[0.95, 0.05]]), np.array([[0.3, 0.7]])
    focal, bce = build_loss("focal"), build_loss("bce")
    assert float(focal(y, easy)) / float(bce(y, easy)) < float(focal(y, hard)) / float(bce(y, hard))


def test_weighted_bce_formula_and_weights():
    labels = np.array([[1, 0], [0, 0], [0, 1], [0, 0]])
    positive, negative = chexnet_weights(labels)
    assert np.allclose(positive, [0.75, 0.75]) and np.allclose(negative, [0.25, 0.25])
    loss = build_loss("weighted_bce", train_labels=labels)
    y, p = np.array([[1.0, 0.0]]), np.array([[0.8, 0.4]])
    expected = (-(0.75 * math.log(0.8)) - 0.25 * math.log(0.6)) / 2
    assert float(loss(y, p)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("loss", [WeightedBinaryCrossentropy([0.9, 0.8], [0.1, 0.2]),
                                  build_loss("focal", alpha=0.3, gamma=1.5)])
def test_custom_losses_serialise(loss):
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    y, p = np.array([[1.0, 0.0]]), np.array([[0.7, 0.1]])
    assert float(clone(y, p)) == pytest.approx(float(loss(y, p)))


def test_bad_loss_arguments():
    with pytest.raises(ValueError, match="loss.name = 'mse'"):
        build_loss("mse")
    with pytest.raises(ValueError, match="needs train_labels"):
        build_loss("weighted_bce")
    with pytest.raises(ValueError, match="alpha = 2"):
        build_loss("focal", alpha=2)
