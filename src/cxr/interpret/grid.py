"""Where an explained map's units sit on the input, and the bilinear placement of the map.

Each unit of a convolutional map is centred on its receptive field: unit j of an axis at input
pixel ``start + step * j``. :func:`unit_centres` follows the model's graph from the input to
the explained layer, nested backbones included, and composes each layer's effect on that
line: a convolution or pooling (kernel, stride, dilation, padding), an explicit
``ZeroPadding2D`` or ``Cropping2D``, a ``Resizing`` / ``UpSampling2D``; a layer that keeps the
map's size keeps its geometry, and a merge (Add, Multiply, Concatenate) keeps the geometry its
inputs share (a 1 x 1 input, e.g. a squeeze-excitation scale, is broadcast and has none).

Why it matters: Keras' EfficientNets downsample with an explicit asymmetric zero padding
(``correct_pad``: none before, one after, for an even 3 x 3 input) and a "valid" convolution,
so every stride-2 stage moves the centres by one input unit of that stage: at stride 32 unit j
sits at ``32 j + 31``, half a stride from the even spread (``32 j + 15.5``) that a plain
image resize assumes. DenseNet121's units sit at ``32 j + 14``. Where the inputs of a merge
disagree (the fusion model's concatenation of both backbones' maps) there is no single answer:
:func:`unit_centres` returns None and :func:`channel_groups` gives each input's channels their
own centres. Where a layer is not one of the above, the caller spreads the grid evenly
(:func:`even_centres`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

# One axis: unit j of a map is centred on input pixel start + step * j.
Axis = tuple[float, float]
Geometry = tuple[Axis, Axis]

_STRIDED = (layers.Conv2D, layers.DepthwiseConv2D, layers.MaxPooling2D, layers.AveragePooling2D)
_GRID_CHANGING = (*_STRIDED, layers.ZeroPadding2D, layers.Cropping2D, layers.Resizing,
                  layers.UpSampling2D)
_TOLERANCE = 1e-6


def _pairs(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _layer_offsets(layer, size: tuple[int, int]):
    """Per axis (offset, stride) of a conv/pool: output unit j is centred on input index
    ``offset + stride * j``; None for a layer that is neither."""
    if not isinstance(layer, _STRIDED):
        return None
    is_pool = isinstance(layer, layers.MaxPooling2D | layers.AveragePooling2D)
    kernel = _pairs(layer.pool_size if is_pool else layer.kernel_size)
    strides = _pairs(layer.strides if layer.strides is not None else kernel)
    dilation = (1, 1) if is_pool else _pairs(layer.dilation_rate)
    result = []
    for n, k, s, d in zip(size, kernel, strides, dilation, strict=True):
        extent = (k - 1) * d + 1
        if layer.padding == "valid":
            before = 0
        else:  # "same", TensorFlow's convention: the extra padding goes after
            out = -(-n // s)
            before = max((out - 1) * s + extent - n, 0) // 2
        result.append(((extent - 1) / 2 - before, s))
    return result


def _spatial(tensor) -> tuple[int, int] | None:
    shape = getattr(tensor, "shape", None)
    if shape is None or len(shape) != 4 or None in tuple(shape[1:3]):
        return None
    return int(shape[1]), int(shape[2])


def _compose(geometry: Geometry, per_axis: Sequence[tuple[float, float]]) -> Geometry:
    """Input unit i at start + step * i; output unit j at input unit offset + stride * j."""
    return tuple((start + step * offset, step * stride)
                 for (start, step), (offset, stride) in zip(geometry, per_axis, strict=True))


def _same(a: Geometry, b: Geometry) -> bool:
    return all(abs(x - y) <= _TOLERANCE for axis_a, axis_b in zip(a, b, strict=True)
               for x, y in zip(axis_a, axis_b, strict=True))


def _layer_geometry(layer, inputs, geometries, output) -> Geometry | None:
    """The geometry of `layer`'s (single, spatial) output from its inputs' geometries."""
    out_size = _spatial(output)
    if out_size is None:
        return None
    spatial = [(geometry, _spatial(tensor)) for tensor, geometry in zip(inputs, geometries,
                                                                       strict=True)
               if _spatial(tensor) is not None]
    if not spatial:
        return None
    geometry, in_size = spatial[0]
    if isinstance(layer, _GRID_CHANGING):
        if geometry is None:
            return None
        if isinstance(layer, _STRIDED):
            return _compose(geometry, _layer_offsets(layer, in_size))
        if isinstance(layer, layers.ZeroPadding2D):  # output unit m is input unit m - before
            return _compose(geometry, [(-float(before), 1.0) for before, _ in layer.padding])
        if isinstance(layer, layers.Cropping2D):
            return _compose(geometry, [(float(before), 1.0) for before, _ in layer.cropping])
        if (getattr(layer, "crop_to_aspect_ratio", False)
                or getattr(layer, "interpolation", "bilinear") != "bilinear"):
            return None  # nearest neighbours (UpSampling2D's default) repeat, not interpolate
        # Bilinear with half-pixel centres (tf.image.resize, jax.image.resize): output unit m
        # samples the input at (m + 0.5) * in / out - 0.5.
        return _compose(geometry, [(0.5 * n / m - 0.5, n / m)
                                   for n, m in zip(in_size, out_size, strict=True)])
    # Any other layer keeps the size: its geometry is the one its same-sized inputs share; an
    # input of another size is allowed only if it is 1 x 1 (broadcast, e.g. a scale).
    if any(size not in (out_size, (1, 1)) for _, size in spatial):
        return None
    same_size = [g for g, size in spatial if size == out_size]
    if not same_size or any(g is None or not _same(g, same_size[0]) for g in same_size):
        return None
    return same_size[0]


def tensor_geometries(model: keras.Model, input_geometries: Sequence[Geometry | None]) -> dict:
    """``{id(tensor): geometry or None}`` for every tensor of the functional `model`, given
    the geometries of its inputs; nested functional models are followed. Raises TypeError
    for a model that is not functional (no graph to follow)."""
    nodes_by_depth = getattr(model, "_nodes_by_depth", None)
    if nodes_by_depth is None:
        raise TypeError(f"model {model.name!r} is not a functional model")
    known = {id(tensor): geometry
             for tensor, geometry in zip(model.inputs, input_geometries, strict=True)}
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            layer = node.operation
            if layer is None or node.is_input:
                continue
            inputs, outputs = list(node.input_tensors), list(node.outputs)
            if any(id(tensor) not in known for tensor in inputs):
                continue
            geometries = [known[id(tensor)] for tensor in inputs]
            if isinstance(layer, keras.Model):
                try:
                    inner = tensor_geometries(layer, geometries)
                except TypeError:  # a nested model without a graph: its outputs unknown
                    inner = {}
                results = [inner.get(id(tensor)) for tensor in layer.outputs]
            elif len(outputs) == 1:
                results = [_layer_geometry(layer, inputs, geometries, outputs[0])]
            else:
                results = [None] * len(outputs)
            for tensor, geometry in zip(outputs, results, strict=True):
                known[id(tensor)] = geometry
    return known


RECEPTIVE_FIELDS = "receptive-field centres"
RECEPTIVE_FIELDS_PER_INPUT = "receptive-field centres of each concatenated input"
EVEN_SPREAD = "even spread"


@dataclass(frozen=True)
class Placement:
    """Where an explained map's units sit on the input: ``kind`` (one of the three above) and
    ``groups``, one ``(channels, (rows, cols))`` per group of channels placed together (the
    whole map, or each input of a concatenation), centres in input pixels."""

    kind: str
    groups: list


def placement(model: keras.Model, layer_name: str) -> Placement:
    """How Grad-CAM places `layer_name`'s (spatial) map on `model`'s input: at its units'
    receptive-field centres; per input where a concatenation joins maps that sit apart
    (:func:`channel_groups`); else spread evenly over the input. One walk of the graph."""
    layer = model.get_layer(layer_name)
    size, channels = _spatial(layer.output), int(layer.output.shape[-1])
    if size is None:
        raise ValueError(f"layer {layer_name!r} of model {model.name!r} is not a spatial map")
    geometries = _input_geometries(model)
    geometry = geometries.get(id(layer.output))
    if geometry is not None:
        return Placement(RECEPTIVE_FIELDS, [(channels, _centres(geometry, size))])
    groups = _concatenated_groups(layer, geometries, size)
    if groups is not None:
        return Placement(RECEPTIVE_FIELDS_PER_INPUT, groups)
    spread = tuple(even_centres(n, int(extent))
                   for n, extent in zip(size, model.input_shape[1:3], strict=True))
    return Placement(EVEN_SPREAD, [(channels, spread)])


def unit_centres(model: keras.Model, layer_name: str):
    """Input-pixel indices of `layer_name`'s unit centres, ``(rows, cols)``, or None.

    None when the layer's output is not a spatial map, or when its geometry is not determined
    (a merge of maps whose units sit in different places, or a layer this module does not
    model).
    """
    try:
        output = model.get_layer(layer_name).output
    except (AttributeError, ValueError):
        return None
    grid, geometry = _spatial(output), _input_geometries(model).get(id(output))
    return None if grid is None or geometry is None else _centres(geometry, grid)


def channel_groups(model: keras.Model, layer_name: str):
    """``[(channels, (rows, cols)), ...]``, one per input, when `layer_name` is a last-axis
    Concatenate of same-sized maps whose units sit in different places (the fusion model's
    ``fusion_concat``); None otherwise (one geometry, or one not determined).

    Grad-CAM then places each input's channels at their own centres before summing them.
    """
    try:
        layer = model.get_layer(layer_name)
        size = _spatial(layer.output)
    except (AttributeError, ValueError):
        return None
    return None if size is None else _concatenated_groups(layer, _input_geometries(model), size)


def _input_geometries(model: keras.Model) -> dict:
    """Every tensor's geometry with the model's inputs as the pixel grid ({} if the model has
    no graph to follow)."""
    try:
        return tensor_geometries(model, [((0.0, 1.0), (0.0, 1.0))] * len(model.inputs))
    except (AttributeError, TypeError, ValueError):
        return {}


def _concatenated_groups(layer, geometries: dict, size: tuple[int, int]):
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return None
    if (not isinstance(layer, layers.Concatenate) or layer.axis not in (-1, 3)
            or not isinstance(inputs, list | tuple)):
        return None
    found = [geometries.get(id(tensor)) for tensor in inputs]
    if any(g is None for g in found) or any(_spatial(t) != size for t in inputs):
        return None
    if all(_same(g, found[0]) for g in found):
        return None  # one geometry: unit_centres answers
    return [(int(tensor.shape[-1]), _centres(g, size))
            for tensor, g in zip(inputs, found, strict=True)]


def _centres(geometry: Geometry, size: tuple[int, int]):
    return tuple(start + step * np.arange(n) for (start, step), n in zip(geometry, size,
                                                                         strict=True))


def even_centres(grid: int, size: int) -> np.ndarray:
    """Half-pixel centres: the grid spread evenly over the input (tf.image.resize's)."""
    step = size / grid
    return (np.arange(grid) + 0.5) * step - 0.5


def interpolation_matrix(centres: np.ndarray, size: int) -> np.ndarray:
    """(size, grid) float32 weights: pixel p's bilinear mix of the units centred at
    ``centres`` (increasing); pixels beyond the outermost centres take the edge unit."""
    centres = np.asarray(centres, dtype=np.float64)
    grid = len(centres)
    weights = np.zeros((size, grid), dtype=np.float32)
    if grid == 1:
        weights[:, 0] = 1.0
        return weights
    pixels = np.arange(size, dtype=np.float64)
    position = np.interp(pixels, centres, np.arange(grid, dtype=np.float64))  # clamps at ends
    low = np.clip(np.floor(position).astype(int), 0, grid - 2)
    high_weight = position - low
    weights[np.arange(size), low] = 1.0 - high_weight
    weights[np.arange(size), low + 1] = high_weight
    return weights
