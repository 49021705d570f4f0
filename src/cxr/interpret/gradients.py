"""Grad-CAM's one gradient, with the backend's own autodiff: tf.GradientTape, jax.vjp, torch.

:func:`coarse_cam_function` returns ``f(images float32 (n, H, W, 3), classes int32 (n,))`` ->
``(n, h, w)`` float32 ReLU'd class-activation maps on the explained layer's grid:

    alpha_k = mean over positions of d logit_c / d A_k,   cam = ReLU(sum_k alpha_k A_k)

(or, given channel groups, the per-group sums before the ReLU: the caller places each group
at its own centres first, ``cxr.interpret.grid.placement``), chosen by
``keras.backend.backend()``. Every version runs the model in inference mode and
scores the finding's logit (the ``predictions`` layer's input times its kernel plus its
bias); they differ only in how the gradient with respect to an *inner* activation is taken:

* TensorFlow: the grad model (inputs -> [explained map, head input]) under a
  ``tf.GradientTape``, traced once by ``tf.function`` (the original implementation).
* JAX: gradients flow to function arguments only, so the explained layer's output gets a
  zero tensor ``delta`` added during the call, and ``jax.vjp`` with respect to ``delta``
  is the gradient with respect to the map. The model runs through a ``keras.StatelessScope``
  with its variables passed as arguments, under ``jax.jit`` (compiled once per batch size,
  batches padded to a power of two).
* PyTorch: the map is captured during the call and ``torch.autograd.grad`` differentiates
  the scores with respect to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from cxr import backend

CoarseCams = Callable[[np.ndarray, np.ndarray], np.ndarray]


def coarse_cam_function(grad_model: keras.Model, layer: keras.layers.Layer,
                        output_layer: keras.layers.Layer,
                        input_shape: tuple[int, ...], groups: np.ndarray | None = None
                        ) -> CoarseCams:
    """The coarse Grad-CAM of ``grad_model`` (inputs -> [``layer``'s map, head input]).

    ``output_layer``: the ``predictions`` Dense layer whose logits are scored.
    ``input_shape``: (H, W, C) of one image.
    ``groups``: None, or a (K, G) 0/1 matrix assigning the map's K channels to G groups; the
    function then returns the (n, h, w, G) per-group sums ``sum_{k in g} alpha_k A_k``
    *before* the ReLU, for the caller to place each group on the input and rectify the total.
    """
    if groups is not None:
        groups = np.asarray(groups, dtype=np.float32)
    kind = backend.name()
    if kind == backend.TENSORFLOW:
        return _tensorflow(grad_model, output_layer, input_shape, groups)
    if kind == "jax":
        return _jax(grad_model, layer, output_layer, groups)
    if kind == "torch":
        return _torch(grad_model, layer, output_layer, groups)
    raise backend.BackendError(f"Grad-CAM has no gradient for the Keras backend {kind!r}; "
                               f"use tensorflow, jax or torch")


def _logits(head_input, kernel, bias):
    return ops.matmul(ops.cast(head_input, "float32"), ops.cast(kernel, "float32")) + ops.cast(
        bias, "float32")


def _cams(maps, grads, groups=None):
    weights = ops.mean(ops.cast(grads, "float32"), axis=(1, 2))
    maps = ops.cast(maps, "float32")
    if groups is None:
        return ops.relu(ops.einsum("bhwk,bk->bhw", maps, weights))
    return ops.einsum("bhwk,bk,kg->bhwg", maps, weights, ops.convert_to_tensor(groups))


# --------------------------------------------------------------------------- TensorFlow


def _tensorflow(grad_model, output_layer, input_shape, groups) -> CoarseCams:
    from cxr.backend import tf

    def coarse_cams(images, classes):
        kernel = ops.cast(output_layer.kernel, "float32")
        bias = ops.cast(output_layer.bias, "float32")
        with tf.GradientTape() as tape:
            maps, head_input = grad_model(images, training=False)
            logits = ops.matmul(ops.cast(head_input, "float32"), kernel) + bias
            scores = tf.gather(logits, classes, axis=1, batch_dims=1)
        # Images are independent in inference mode, so the gradient of the summed scores
        # holds each image's own gradient.
        return _cams(maps, tape.gradient(scores, maps), groups)

    traced = tf.function(coarse_cams, input_signature=[
        tf.TensorSpec((None, *input_shape), tf.float32), tf.TensorSpec((None,), tf.int32)])

    def run(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        cams = traced(tf.convert_to_tensor(images, tf.float32),
                      tf.convert_to_tensor(classes, tf.int32))
        return np.asarray(cams, dtype=np.float32)

    return run


# --------------------------------------------------------------------------- JAX


@contextlib.contextmanager
def _output_plus(layer: keras.layers.Layer, delta):
    """Within the block, ``layer``'s output is its own output + ``delta``; the original
    output is stored in the yielded dict under ``"map"``."""
    captured: dict = {}
    original = layer.call

    def call(*args, **kwargs):
        output = original(*args, **kwargs)
        captured["map"] = output
        return output if delta is None else output + ops.cast(delta, output.dtype)

    layer.call = call
    try:
        yield captured
    finally:
        del layer.call


def _jax(grad_model, layer, output_layer, groups) -> CoarseCams:
    import jax
    import jax.numpy as jnp

    variables = list(grad_model.variables)
    map_shape = tuple(int(d) for d in layer.output.shape[1:])
    map_dtype = keras.backend.standardize_dtype(layer.output.dtype)

    def scores(delta, values, kernel, bias, images, classes):
        mapping = list(zip(variables, values, strict=True))
        with keras.StatelessScope(state_mapping=mapping), _output_plus(layer, delta) as captured:
            _, head_input = grad_model(images, training=False)
        logits = _logits(head_input, kernel, bias)
        return jnp.take_along_axis(logits, classes[:, None], axis=1).sum(), captured["map"]

    @jax.jit
    def coarse_cams(values, kernel, bias, images, classes):
        delta = jnp.zeros((images.shape[0], *map_shape), map_dtype)
        # Images are independent in inference mode: the gradient of the summed scores holds
        # each image's own gradient.
        _, vjp, maps = jax.vjp(lambda d: scores(d, values, kernel, bias, images, classes),
                               delta, has_aux=True)
        (grads,) = vjp(jnp.ones((), "float32"))
        return _cams(maps, grads, groups)

    def run(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        n = len(images)
        padded = 1 << max(n - 1, 0).bit_length()  # one compilation per power of two
        images = np.concatenate([images, np.zeros((padded - n, *images.shape[1:]),
                                                  images.dtype)])
        classes = np.concatenate([classes, np.zeros(padded - n, classes.dtype)])
        cams = coarse_cams([v.value for v in variables], output_layer.kernel.value,
                           output_layer.bias.value, jnp.asarray(images, "float32"),
                           jnp.asarray(classes, "int32"))
        return np.asarray(cams, dtype=np.float32)[:n]

    return run


# --------------------------------------------------------------------------- PyTorch


def _torch(grad_model, layer, output_layer, groups) -> CoarseCams:
    import torch

    def run(images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        x = ops.convert_to_tensor(images, "float32")
        index = ops.convert_to_tensor(classes, "int64")
        with torch.enable_grad(), _output_plus(layer, None) as captured:
            _, head_input = grad_model(x, training=False)
            maps = captured["map"]
            logits = _logits(head_input, output_layer.kernel, output_layer.bias)
            score = torch.gather(logits, 1, index[:, None]).sum()
            (grads,) = torch.autograd.grad(score, maps)
        with torch.no_grad():
            cams = _cams(maps, grads, groups)
        return ops.convert_to_numpy(cams).astype(np.float32)

    return run
