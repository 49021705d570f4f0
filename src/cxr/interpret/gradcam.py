"""Grad-CAM heatmaps (Selvaraju et al. 2017) for every cxr model, for any finding, batched.

For an image and a finding c, with A the explained layer's output (h x w x K):

    alpha_k = mean over the h x w positions of  d s_c / d A_k      (s_c: the finding's logit)
    cam     = ReLU(sum_k alpha_k A_k)                               (h x w)

placed on the input at each unit's receptive-field centre (:mod:`cxr.interpret.grid`; bilinear
between centres) and divided by its maximum: one (H, W) float32 map in [0, 1] per image, at
the model's input resolution; all zeros when nothing speaks for the finding. The explained
layer per model is ``cxr.models.registry.GRADCAM_LAYER`` (fusion: ``fusion_concat``, before
the attention). The model runs in inference mode; grad models are cached per (model, layer)
by weak reference.
The gradient is the Keras backend's own (:mod:`cxr.interpret.gradients`).
Why the logit, why ``fusion_concat``, how the grid is placed: docs/DESIGN.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

from cxr.interpret.gradients import coarse_cam_function
from cxr.interpret.grid import interpolation_matrix, placement
from cxr.labels import INDEX, LABELS, LabelError, canonical
from cxr.models.constants import FEATURES_LAYER, OUTPUT_LAYER
from cxr.models.registry import GRADCAM_LAYER
from cxr.validation import check_int

# One source: the registry (fusion explains fusion_concat, before the attention).
EXPLAINED_LAYER: dict[str, str] = GRADCAM_LAYER
DEFAULT_BATCH_SIZE = 32

_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def explained_layer(model_or_name) -> str:
    """The layer Grad-CAM explains for a registered model name or a cxr model.

    A model is recognised by its name (``simple_cnn``, ``cxr_densenet121``, ...). Any other
    model falls back to the last layer before ``features`` whose output is a spatial map.
    """
    if isinstance(model_or_name, str):
        if model_or_name not in EXPLAINED_LAYER:
            raise ValueError(f"unknown model name {model_or_name!r}; allowed: "
                             f"{', '.join(EXPLAINED_LAYER)}.")
        return EXPLAINED_LAYER[model_or_name]
    model = model_or_name
    name = model.name.removeprefix("cxr_")
    if name in EXPLAINED_LAYER:
        return EXPLAINED_LAYER[name]
    spatial = [layer.name for layer in model.layers
               if not isinstance(layer, layers.InputLayer) and _is_spatial(layer)]
    names = [layer.name for layer in model.layers]
    if FEATURES_LAYER in names:
        before = set(names[: names.index(FEATURES_LAYER)])
        spatial = [name for name in spatial if name in before]
    if not spatial:
        raise ValueError(f"model {model.name!r} has no layer with a (batch, height, width, "
                         "channels) output to explain; pass layer_name.")
    return spatial[-1]


def _is_spatial(layer) -> bool:
    try:
        shape = layer.output.shape
    except (AttributeError, ValueError):  # a layer used more than once has no single output
        return False
    return len(shape) == 4 and all(dim is not None for dim in shape[1:])


# ---------------------------------------------------------------------------------------------
# Grad-CAM


class GradCam:
    """Grad-CAM of one model at one layer: ``heatmaps(images, classes)``.

    Holds the grad model (``model.inputs`` -> [explained map, the ``predictions`` layer's
    input]), the output layer's weights and the placement of the grid on the input; use
    :meth:`of` for the cached instance.
    """

    def __init__(self, model: keras.Model, layer_name: str):
        # No reference to `model` itself: instances are cached by weak reference to it.
        try:
            layer = model.get_layer(layer_name)
            output_layer = model.get_layer(OUTPUT_LAYER)
        except ValueError as err:
            raise ValueError(f"model {model.name!r} has no layer {err}; Grad-CAM needs the "
                             f"explained layer and {OUTPUT_LAYER!r}.") from None
        if not _is_spatial(layer):
            raise ValueError(f"layer {layer_name!r} of model {model.name!r} must output a "
                             f"(batch, height, width, channels) map; it gives "
                             f"{getattr(layer.output, 'shape', None)}.")
        input_shape = tuple(model.input_shape)
        if len(input_shape) != 4 or None in input_shape[1:]:
            raise ValueError(f"model {model.name!r} must take (batch, height, width, channels) "
                             f"images of a fixed size; its input shape is {input_shape}.")
        self.layer_name = layer_name
        self.input_shape = input_shape[1:]
        self.grad_model = keras.Model(model.inputs, [layer.output, output_layer.input],
                                      name=f"{model.name}_gradcam")
        self.output_layer = output_layer
        self.n_classes = int(output_layer.units)
        grid = tuple(int(dim) for dim in layer.output.shape[1:3])
        # Where the map's units sit on the input (cxr.interpret.grid): one placement for the
        # whole map, or one per input of a concatenation whose inputs sit apart.
        where = placement(model, layer_name)
        self.placement, self.grid = where.kind, grid
        channels = [count for count, _ in where.groups]
        indicator = None
        if len(channels) > 1:  # the gradient function sums each group's channels apart
            indicator = np.zeros((sum(channels), len(channels)), dtype=np.float32)
            for group, (start, count) in enumerate(zip(np.cumsum([0, *channels]), channels,
                                                       strict=False)):
                indicator[start : start + count, group] = 1.0
        self.placements = [(interpolation_matrix(rows, self.input_shape[0]),
                            interpolation_matrix(cols, self.input_shape[1]))
                           for _, (rows, cols) in where.groups]
        # Per placement, the unit centres (rows, cols) in input pixels.
        self.unit_centres = [[np.asarray(axis, dtype=float).round(3).tolist() for axis in centres]
                             for _, centres in where.groups]
        self.centres = where.groups[0][1] if indicator is None else None
        self.rows, self.cols = self.placements[0]
        # The backend's own gradient (tf.GradientTape, jax.vjp, torch.autograd).
        self._coarse = coarse_cam_function(self.grad_model, layer, output_layer,
                                           self.input_shape, indicator)

    @classmethod
    def of(cls, model: keras.Model, layer_name: str | None = None) -> GradCam:
        """The cached GradCam of ``model`` at ``layer_name`` (default :func:`explained_layer`)."""
        layer_name = layer_name or explained_layer(model)
        per_model = _EXPLAINERS.setdefault(model, {})
        if layer_name not in per_model:
            per_model[layer_name] = cls(model, layer_name)
        return per_model[layer_name]

    def coarse(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(n, h, w) float32 ReLU'd maps on the explained layer's grid, not normalised; with
        several placements, (n, h, w, G) per-group weighted sums before the ReLU."""
        return self._coarse(np.asarray(images, np.float32), np.asarray(classes, np.int32))

    def heatmaps(self, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """(n, H, W) float32 in [0, 1]: each map divided by its maximum (zeros stay zeros).

        With several placements each group's sum is placed at its own centres, and the ReLU
        applies to their total at each input pixel: the same weighted sum over every channel.
        """
        cams = self.coarse(images, classes)
        if len(self.placements) == 1:
            maps = np.einsum("yi,bij,xj->byx", self.rows, cams, self.cols, optimize=True)
        else:
            maps = np.maximum(sum(np.einsum("yi,bij,xj->byx", rows, cams[..., group], cols,
                                            optimize=True)
                                  for group, (rows, cols) in enumerate(self.placements)), 0.0)
        peaks = maps.max(axis=(1, 2), keepdims=True)
        # Divide only where there is positive evidence; exact zeros stay a flat map.
        np.divide(maps, peaks, out=maps, where=peaks > 0)
        return np.clip(maps, 0.0, 1.0).astype(np.float32, copy=False)


def class_index(finding, n_classes: int = len(LABELS)) -> int:
    """An output index from an int or a finding name (canonical or alias, e.g. Infiltrate)."""
    if isinstance(finding, str):
        try:
            return INDEX[canonical(finding)]
        except (LabelError, KeyError):
            raise ValueError(f"unknown finding {finding!r}; expected one of "
                             f"{', '.join(LABELS)}.") from None
    if isinstance(finding, bool) or not isinstance(finding, int | np.integer):
        raise ValueError(f"a finding must be an index or a name; got {finding!r}.")
    if not 0 <= int(finding) < n_classes:
        raise ValueError(f"finding index {int(finding)} is out of range [0, {n_classes}).")
    return int(finding)


def gradcam(
    model: keras.Model,
    images,
    class_indices,
    layer_name: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Grad-CAM heatmaps of ``images`` for the given findings, at the input resolution.

    Args:
        model: a cxr model (raw 0-255 RGB input, a ``predictions`` layer with one sigmoid per
            finding).
        images: (N, H, W, 3) raw 0-255 pixels (any numeric dtype), H x W the model's input.
        class_indices: the finding to explain: one for all images, or one per image; each an
            output index or a finding name (``"Effusion"``, alias ``"Infiltrate"``).
        layer_name: the layer to explain; default :func:`explained_layer` of the model.
        batch_size: images per gradient computation.

    Returns:
        (N, H, W) float32 in [0, 1], each map divided by its maximum; all zeros where the
        finding has no positive evidence (see the module docstring).
    """
    images = np.asarray(images)
    explainer = GradCam.of(model, layer_name)
    if images.ndim != 4 or images.shape[1:] != explainer.input_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, explainer.input_shape))})"
                         f" for model {model.name!r}; got {images.shape}.")
    if not np.issubdtype(images.dtype, np.number):
        raise ValueError(f"images must be numeric (raw 0-255 pixels); got dtype {images.dtype}.")
    batch_size = check_int(batch_size, "batch_size", min_val=1, type_error=ValueError)
    n = len(images)
    if isinstance(class_indices, str | int | np.integer):
        classes = np.full(n, class_index(class_indices, explainer.n_classes), dtype=np.int32)
    else:
        if not isinstance(class_indices, Sequence | np.ndarray) or len(class_indices) != n:
            raise ValueError(f"class_indices must be one finding or one per image ({n}); got "
                             f"{class_indices!r}.")
        classes = np.array([class_index(c, explainer.n_classes) for c in class_indices],
                           dtype=np.int32)
    chunks = [explainer.heatmaps(images[start : start + batch_size].astype(np.float32),
                                 classes[start : start + batch_size])
              for start in range(0, n, batch_size)]
    if not chunks:
        return np.zeros((0, *explainer.input_shape[:2]), dtype=np.float32)
    return np.concatenate(chunks)
