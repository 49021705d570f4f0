"""Model name -> builder: ``build(name, image_size, weights, freeze_backbone, **options)``,
the one entry point the rest of the project uses to make a model.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import keras

from cxr.models import backbones, fusion, simple_cnn
from cxr.models.backbones import (
    check_image_size,
    imagenet_weights_files,
    load_weights_file,
    set_backbone_trainable,
    set_batchnorm_momentum,
    set_stochastic_depth,
    zero_init_residual,
)
from cxr.models.registry import BACKBONES, MIN_IMAGE_SIZE, check_model_name
from cxr.validation import check_bool

# Builders take `image_size` and `weights` (None, "imagenet" or {backbone: notop file}) plus
# model options.
_BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "simple_cnn": simple_cnn.build_simple_cnn,
    "densenet121": partial(backbones.build_application_model, "densenet121"),
    "efficientnetb0": partial(backbones.build_application_model, "efficientnetb0"),
    "fusion": fusion.build_fusion,
}
_NOT_OPTIONS = {"image_size", "weights", "backbone_name"}


def model_options(name: str) -> dict[str, object]:
    """The extra keyword options `build(name, ...)` accepts, with their defaults."""
    check_model_name(name)
    signature = inspect.signature(_BUILDERS[name])
    options = {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if key not in _NOT_OPTIONS and parameter.default is not inspect.Parameter.empty
    }
    if BACKBONES[name]:
        options["batchnorm_momentum"] = None  # None: Keras' own (0.99)
    if any(backbone.startswith("efficientnet") for backbone in BACKBONES[name]):
        options["stochastic_depth"] = None  # None: Keras' own drop_connect_rate (0.2)
        options["zero_init_residual"] = False  # True: residual blocks start as the identity
    return options


def build(
    name: str,
    image_size: int = 224,
    weights: str | os.PathLike | None = "none",
    freeze_backbone: bool = False,
    **options,
) -> keras.Model:
    """Build model `name` for raw 0-255 RGB images of `image_size` x `image_size`.

    Args:
        name: one of `MODEL_NAMES`.
        image_size: side of the square input (>= `MIN_IMAGE_SIZE[name]`).
        weights: "none" (random init), "imagenet" (pretrained backbones; not for
            simple_cnn), the path of a local weights file: a full-model file saved from
            the same architecture and options, or (densenet121, efficientnetb0) a file of
            the backbone alone (see `backbones.load_weights_file`), or the path of a
            directory holding the Keras ImageNet no-top file of every backbone of the model
            under Keras's own name (offline "imagenet"; fusion needs two:
            `densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5` and
            `efficientnetb3_notop.h5`; see `backbones.imagenet_weights_files`).
        freeze_backbone: make every backbone layer non-trainable (no-op for simple_cnn).
        options: model options, see `model_options(name)` (e.g. `dropout`,
            `hidden_units`; fusion: `dense_cut`, `efficient_cut`, `proj_channels`; every
            model with a backbone: `batchnorm_momentum`, None for Keras' 0.99; every
            model with an EfficientNet: `stochastic_depth`, None for Keras' 0.2, and
            `zero_init_residual`, True to start its residual blocks as the identity; with
            weights "none" only).

    Returns:
        An uncompiled keras.Model with 14 sigmoid outputs, output layer `predictions`, a
        `features` layer before the (Dropout/Dense-only) head.
    """
    check_model_name(name)
    image_size = check_image_size(image_size, MIN_IMAGE_SIZE[name], name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"build({name!r}): unknown option(s) {unknown}; allowed: {sorted(allowed)}."
        )
    check_bool(freeze_backbone, "freeze_backbone", type_error=ValueError)

    weights_path = None
    if weights is None or weights == "none":
        builder_weights = None
    elif weights == "imagenet":
        if name == "simple_cnn":
            raise ValueError(
                "weights='imagenet' is not available for simple_cnn (it has no pretrained "
                "backbone); use 'none' or a weights file path."
            )
        builder_weights = "imagenet"
    elif isinstance(weights, str | os.PathLike) and Path(weights).expanduser().is_dir():
        builder_weights = imagenet_weights_files(weights, BACKBONES[name], name)
    elif isinstance(weights, str | os.PathLike):
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise FileNotFoundError(
                f"weights={str(weights)!r} is neither 'none', 'imagenet', an existing file nor "
                "a directory of Keras ImageNet no-top files."
            )
        builder_weights = None
    else:
        raise ValueError(f"weights must be 'none', 'imagenet' or a file path; got {weights!r}.")

    momentum = options.pop("batchnorm_momentum", None)
    stochastic_depth = options.pop("stochastic_depth", None)
    zero_residual = options.pop("zero_init_residual", False)
    check_bool(zero_residual, "zero_init_residual", type_error=ValueError)
    if zero_residual and (builder_weights is not None or weights_path is not None):
        raise ValueError(
            f"zero_init_residual is for random initialisation (weights 'none'); with weights="
            f"{str(weights)!r} it would erase the pretrained residual blocks. Set it to false.")
    builder = _BUILDERS[name]
    if name == "simple_cnn":
        model = builder(image_size=image_size, **options)
    else:
        model = builder(image_size=image_size, weights=builder_weights, **options)
    if weights_path is not None:
        load_weights_file(model, weights_path)
    if momentum is not None:
        set_batchnorm_momentum(model, momentum)
    if stochastic_depth is not None:
        set_stochastic_depth(model, stochastic_depth)
    if zero_residual:
        zero_init_residual(model)
    if freeze_backbone:
        set_backbone_trainable(model, False)
    return model
