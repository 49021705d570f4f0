"""Multiply-accumulates (MACs) of a model's forward pass for one image.

Counts the layers that carry the arithmetic: ``Conv2D`` (grouped too), ``DepthwiseConv2D``,
``SeparableConv2D`` and ``Dense``, in nested models as well (the backbones are functional
models inside the classifier). What it leaves out is cheap in arithmetic and bound by memory
traffic instead: BatchNormalization, activations, pooling, element-wise merges, resizing and
the fusion attention's two small matrix products (``(H W)^2 C`` each: 131,072 MACs at 4 x 4 x
512, against about 10^8 for the convolutions). One MAC is two floating-point operations;
training costs about three forward passes (the backward pass computes gradients for both the
inputs and the weights of each layer).

Used by ``benchmarks/compute_floor.py`` to say how far this CPU is from its arithmetic peak.
"""

from __future__ import annotations

import math

import keras
from keras import layers


def _spatial_dims(shape) -> int:
    """The product of the non-batch, non-channel dimensions (1 for a vector)."""
    dims = tuple(shape[1:-1])
    if any(d is None for d in dims):
        raise ValueError(f"shape {tuple(shape)} has an unknown dimension; build the model with "
                         f"a fixed input size")
    return math.prod(dims) if dims else 1


def _layer_macs(layer, input_shape, output_shape) -> int:
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _spatial_dims(output_shape) * int(output_shape[-1]) * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        depthwise = int(input_shape[-1]) * layer.depth_multiplier
        return _spatial_dims(output_shape) * depthwise * (kh * kw + int(output_shape[-1]))
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        per_output = kh * kw * int(input_shape[-1]) // layer.groups
        return _spatial_dims(output_shape) * int(output_shape[-1]) * per_output
    if isinstance(layer, layers.Dense):
        return _spatial_dims(output_shape) * int(input_shape[-1]) * int(output_shape[-1])
    return 0


def forward_macs(model: keras.Model) -> int:
    """MACs of one forward pass of one image through `model` (see the module doc).

    Every call of a layer counts (a layer shared by two branches twice); a nested model is
    followed into its own layers. Raises ValueError when a counted layer's spatial size is
    unknown (a model built without a fixed input size).
    """
    total = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.Model):
            continue  # its layers are visited on their own
        for node in getattr(layer, "_inbound_nodes", []):
            inputs, outputs = list(node.input_tensors), list(node.outputs)
            if len(inputs) != 1 or len(outputs) != 1:
                continue  # merges and multi-output layers: none of the counted kinds
            total += _layer_macs(layer, inputs[0].shape, outputs[0].shape)
    return int(total)
