"""Mixed precision: no model overflows to inf/NaN under `mixed_float16`.

The fusion model's self-attention computes q.k^T over 512 channels; in float16 that sum
overflows (max 65504) once q and k are in the hundreds. These tests plant such activations.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from cxr.labels import N_LABELS
from cxr.models import MODEL_NAMES, SpatialSelfAttention, build
from cxr.training import runtime
from cxr.training.losses import FocalLoss

SMALL = 32


@pytest.fixture
def mixed_float16():
    """The global policy is process-wide: set it for one test and always restore it."""
    before = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(before)


class OldSpatialSelfAttention(SpatialSelfAttention):
    """The attention as it was before the fix: q.k^T in the compute dtype, cast afterwards."""

    def call(self, inputs):
        batch, height, width, channels = (ops.shape(inputs)[0], *inputs.shape[1:])

        def flatten(t):
            return ops.reshape(t, (batch, height * width, t.shape[-1]))

        query, key = flatten(self.query(inputs)), flatten(self.key(inputs))
        value = flatten(self.value(inputs))
        logits = ops.matmul(query, ops.transpose(key, (0, 2, 1)))
        weights = ops.cast(ops.softmax(ops.cast(logits, "float32"), axis=-1), value.dtype)
        attended = ops.reshape(ops.matmul(weights, value), (batch, height, width, channels))
        return self.gamma * attended + inputs


def _large_input(channels: int = 512) -> np.ndarray:
    """A (2, 4, 4, channels) map ~ 300 that is the same direction at every position, so
    q and k are large and aligned and q.k is ~ 1e7, far beyond float16's 65504."""
    rng = np.random.default_rng(0)
    direction = rng.uniform(0.5, 1.0, channels).astype("float32")
    return (300.0 * direction * rng.uniform(0.9, 1.0, (2, 4, 4, 1))).astype("float32")


def _attention_pair():
    x = _large_input()
    new, old = SpatialSelfAttention(), OldSpatialSelfAttention()
    new.build(x.shape)
    old.build(x.shape)
    old.set_weights(new.get_weights())
    for layer in (new, old):
        layer.gamma.assign(0.5)
        # Positive 1x1 kernels: q and k are sums of 512 positive terms (the worst case).
        for conv in (layer.query, layer.key):
            conv.kernel.assign(np.full(conv.kernel.shape, 0.01, dtype="float32"))
    return x, new, old


def test_old_attention_overflows_in_float16_and_the_new_one_does_not(mixed_float16):
    x, new, old = _attention_pair()
    assert new.compute_dtype == "float16"
    old_out = ops.convert_to_numpy(old(x))
    assert np.isnan(old_out).any(), "the pre-fix attention should give NaN here"
    new_out = ops.convert_to_numpy(new(x))
    assert new_out.dtype == np.float16 and np.isfinite(new_out).all()
    # Same numbers as the float32 layer, to float16 precision.
    keras.mixed_precision.set_global_policy("float32")
    reference = SpatialSelfAttention()
    reference.build(x.shape)
    reference.set_weights(new.get_weights())
    np.testing.assert_allclose(new_out.astype("float32"), ops.convert_to_numpy(reference(x)),
                               rtol=2e-2, atol=1.0)


def _loss_and_gradients(model, images, labels):
    with tf.GradientTape() as tape:
        probabilities = model(images, training=True)
        loss = FocalLoss()(labels, probabilities)
    return probabilities, loss, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "fusion" else n for n in MODEL_NAMES])
def test_every_model_is_finite_under_mixed_float16(mixed_float16, name):
    keras.utils.set_random_seed(0)
    model = build(name, image_size=SMALL)
    rng = np.random.default_rng(1)
    # Raw 0-255 pixels, batch 4. (A batch of near-identical images would make training-mode
    # BatchNorm divide by a ~0 batch variance and overflow float16 gradients on its own.)
    images = rng.uniform(0, 255, (4, SMALL, SMALL, 3)).astype("float32")
    labels = (rng.random((4, N_LABELS)) < 0.3).astype("float32")
    if name == "fusion":
        attention = model.get_layer("attention")
        attention.gamma.assign(0.5)
        # Shift the projected maps to ~300 so the attention sees overflow-sized q and k.
        for projection in ("densenet_projection", "efficientnet_projection"):
            conv = model.get_layer(projection)
            conv.bias.assign(np.full(conv.bias.shape, 300.0, dtype="float32"))
        probe = keras.Model(model.input, model.get_layer("fusion_concat").output)
        attention_input = np.abs(ops.convert_to_numpy(probe(images, training=False)))
        assert attention_input.dtype == np.float16 and attention_input.max() > 100
        old = OldSpatialSelfAttention()
        old.build(attention_input.shape)
        old.set_weights(attention.get_weights())
        assert not np.isfinite(ops.convert_to_numpy(old(attention_input))).all(), (
            "the planted activations should break the pre-fix attention")
    inference = ops.convert_to_numpy(model(images, training=False))
    probabilities, loss, gradients = _loss_and_gradients(model, images, labels)
    assert inference.dtype == np.float32 and np.isfinite(inference).all()
    assert np.isfinite(ops.convert_to_numpy(probabilities)).all()
    assert np.isfinite(float(loss))
    assert all(np.isfinite(ops.convert_to_numpy(g)).all() for g in gradients if g is not None)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_configure_sets_the_chosen_precision_policy(policy):
    before = keras.mixed_precision.global_policy().name
    try:
        runtime.configure(seed=0, deterministic=False, mixed_precision=True,
                          precision_policy=policy)
        assert keras.mixed_precision.global_policy().name == policy
        runtime.configure(seed=0, deterministic=False, mixed_precision=False,
                          precision_policy=policy)
        assert keras.mixed_precision.global_policy().name == "float32"
        with pytest.raises(ValueError, match="precision_policy"):
            runtime.configure(seed=0, deterministic=False, mixed_precision=True,
                              precision_policy="float16")
    finally:
        keras.mixed_precision.set_global_policy(before)
