"""Pretrained-architecture backbones (Keras applications) and what is done to them.

- `application`: a `keras.applications` network without its top, as a named sub-model
  (`densenet121`, `efficientnetb0`, `efficientnetb3`), with random or ImageNet weights.
- `application_trunk`: the same network cut at an intermediate layer (`<name>_trunk`).
- `build_application_model`: preprocessing -> backbone -> `heads.dense_head`.
- `load_weights_file`: the `weights=FILE` branch of `cxr.models.build`.
- `imagenet_weights_files`: the `weights=DIRECTORY` branch: the Keras `*_notop.h5` file of
  each backbone a model needs, found by its Keras file name (offline ImageNet weights).
- `backbone_layers` / `set_backbone_trainable`: freezing for two-phase training.

Backbones stay nested sub-models, so they are found by name after a `.keras` round trip.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cxr.labels import N_LABELS
from cxr.models.constants import APPLICATION_MIN_IMAGE_SIZE, FEATURE_MAP_LAYER
from cxr.models.heads import dense_head
from cxr.models.layers import IMAGENET_STD
from cxr.models.preprocessing import preprocessing_layer
from cxr.validation import check_fraction, check_number

# name -> (constructor, the file keras.applications downloads for include_top=False).
APPLICATIONS: dict[str, tuple[Callable[..., keras.Model], str]] = {
    "densenet121": (
        keras.applications.DenseNet121,
        "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "efficientnetb0": (keras.applications.EfficientNetB0, "efficientnetb0_notop.h5"),
    "efficientnetb3": (keras.applications.EfficientNetB3, "efficientnetb3_notop.h5"),
}
TRUNK_SUFFIX = "_trunk"
BACKBONE_NAMES: frozenset[str] = frozenset(
    list(APPLICATIONS) + [name + TRUNK_SUFFIX for name in APPLICATIONS]
)
MIN_IMAGE_SIZE = APPLICATION_MIN_IMAGE_SIZE


def check_image_size(image_size, minimum: int, model_name: str) -> int:
    """`image_size` as an int, or a ValueError naming the model and the minimum."""
    check_number(image_size, "image_size", type_error=ValueError)
    if int(image_size) != image_size or image_size < minimum:
        raise ValueError(
            f"image_size={image_size!r} is too small or not whole for model {model_name!r}: "
            f"it needs an integer >= {minimum} (images are image_size x image_size x 3)."
        )
    return int(image_size)


def application(name: str, image_size: int, weights=None) -> keras.Model:
    """`keras.applications.<name>(include_top=False)` for `(image_size, image_size, 3)` input.

    Args:
        weights: `None` (random init), `"imagenet"` (Keras downloads the file once into
            `~/.keras/models/`, or `$KERAS_HOME/models/`; without network a RuntimeError
            says which file to put there), or a mapping {backbone name: path of its Keras
            ImageNet no-top `.h5` file} (`imagenet_weights_files`), read offline.

    The layers are the same whatever `weights` is, so a weights file saved from a model
    built with ImageNet weights loads into one built with `weights=None`. (Keras's
    EfficientNet adds a constant Rescaling after its Normalization only for ImageNet
    weights; here that constant is folded into the Normalization variance instead.)
    """
    if name not in APPLICATIONS:
        raise ValueError(f"unknown backbone {name!r}; allowed: {', '.join(APPLICATIONS)}.")
    if not (weights is None or weights == "imagenet" or isinstance(weights, Mapping)):
        raise ValueError(f"application weights must be None, 'imagenet' or a mapping "
                         f"{{backbone: notop file}}; got {weights!r}.")
    image_size = check_image_size(image_size, MIN_IMAGE_SIZE, name)
    constructor, _ = APPLICATIONS[name]
    input_shape = (image_size, image_size, 3)
    if isinstance(weights, Mapping):
        if name not in weights:
            raise ValueError(f"no weights file for backbone {name!r} in {dict(weights)}.")
        return _application_from_notop_file(name, input_shape, Path(weights[name]))
    if weights is None:
        return constructor(include_top=False, weights=None, input_shape=input_shape)
    pretrained = _imagenet_application(name, input_shape)
    if not name.startswith("efficientnet"):
        return pretrained
    model = constructor(include_top=False, weights=None, input_shape=input_shape)
    model.set_weights(pretrained.get_weights())
    scale = _stddev_rescaling(pretrained)
    fold_rescaling_into_normalization(model, scale if scale is not None else 1.0)
    return model


def imagenet_weights_files(
    directory: str | os.PathLike, backbones: tuple[str, ...], model_name: str
) -> dict[str, Path]:
    """{backbone: directory / its Keras no-top file name} for the backbones of `model_name`.

    The file names are those keras.applications downloads (`APPLICATIONS`), so a copy of
    `~/.keras/models/` from a machine with internet is such a directory. A missing file is
    a FileNotFoundError naming the backbone, the file and the directory searched.
    """
    directory = Path(directory).expanduser()
    if not backbones:
        raise ValueError(
            f"weights={str(directory)!r}: model {model_name!r} has no pretrained backbone, so "
            "a directory of ImageNet weights does not apply; use 'none' or a weights file.")
    files = {name: directory / APPLICATIONS[name][1] for name in backbones}
    missing = [f"{name} needs {path.name}" for name, path in files.items() if not path.is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise FileNotFoundError(
            f"weights directory {str(directory.resolve())!r} lacks the ImageNet no-top weights "
            f"model {model_name!r} needs: {'; '.join(missing)}. It holds: {present or 'nothing'}. "
            "Copy those files from ~/.keras/models/ of a machine that has them (or from "
            "https://storage.googleapis.com/keras-applications/)."
        )
    return files


def _application_from_notop_file(name: str, input_shape, path: Path) -> keras.Model:
    """The application with random init, then Keras's ImageNet no-top `.h5` file loaded
    (by layer order, as keras.applications loads it); for EfficientNet the ImageNet input
    rescaling is folded in, exactly as for weights="imagenet"."""
    constructor, _ = APPLICATIONS[name]
    model = constructor(include_top=False, weights=None, input_shape=input_shape)
    error = _try_load(model, path)
    if error is not None:
        raise ValueError(
            f"weights file {str(path)!r} does not fit backbone {name!r} (expected Keras's "
            f"{APPLICATIONS[name][1]}): {_short(error)}")
    if name.startswith("efficientnet"):
        fold_rescaling_into_normalization(model, 1.0 / np.sqrt(IMAGENET_STD))
    return model


def _imagenet_application(name: str, input_shape: tuple[int, int, int]) -> keras.Model:
    constructor, weights_file = APPLICATIONS[name]
    try:
        return constructor(include_top=False, weights="imagenet", input_shape=input_shape)
    except Exception as err:
        raise RuntimeError(
            f"Could not get the ImageNet weights of {name} ({type(err).__name__}: {err}). "
            f"Keras downloads them once and caches them as ~/.keras/models/{weights_file} "
            "(the directory is $KERAS_HOME/models/ when the KERAS_HOME environment variable "
            f"is set). On a machine without network, copy {weights_file} there from a machine "
            "that has it (or from https://storage.googleapis.com/keras-applications/), or "
            "build with weights='none' or weights=<path to a weights file>."
        ) from err


def _stddev_rescaling(efficientnet: keras.Model):
    """The per-channel scale of the Rescaling right after the Normalization, if any."""
    stack = efficientnet.layers
    for before, after in zip(stack, stack[1:], strict=False):
        if isinstance(before, layers.Normalization) and isinstance(after, layers.Rescaling):
            return np.asarray(after.scale, dtype="float32")
    return None


def fold_rescaling_into_normalization(efficientnet: keras.Model, scale) -> None:
    """Make the first Normalization layer also multiply its output by `scale` (per channel).

    `(x - mean) / sqrt(var) * scale == (x - mean) / sqrt(var / scale**2)`.
    """
    norm = next(layer for layer in efficientnet.layers if isinstance(layer, layers.Normalization))
    scale = np.asarray(scale, dtype="float32")
    norm.adapt_variance.assign(np.asarray(norm.adapt_variance) / scale**2)
    norm.finalize_state()


def refresh_normalization(model: keras.Model) -> None:
    """Recompute Normalization layers' cached mean/variance from their variables.

    Keras caches them as tensors when weights are *loaded*, not when they are *set*
    (`set_weights`), so call this after `set_weights`.
    """
    for layer in _walk_layers(model):
        if isinstance(layer, layers.Normalization):
            layer.finalize_state()


def _walk_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)


def application_trunk(name: str, cut_layer: str, image_size: int, weights=None) -> keras.Model:
    """The application from its input up to the output of `cut_layer`, named `<name>_trunk`.

    Only the layers on the way to `cut_layer` (and their weights) are part of the trunk.
    """
    full = application(name, image_size, weights)
    try:
        cut = full.get_layer(cut_layer)
    except ValueError as err:
        raise ValueError(
            f"cut layer {cut_layer!r} is not a layer of {name} "
            f"(its last layers are {[layer.name for layer in full.layers[-4:]]})."
        ) from err
    shape = cut.output.shape
    if len(shape) != 4 or any(dim is None or dim < 1 for dim in shape[1:]):
        raise ValueError(
            f"cut layer {cut_layer!r} of {name} must give a (height, width, channels) map of at "
            f"least 1x1 at image_size={image_size}; it gives {tuple(shape[1:])}. "
            "Use a larger image_size or an earlier cut layer."
        )
    return keras.Model(full.input, cut.output, name=name + TRUNK_SUFFIX)


def build_application_model(
    backbone_name: str,
    image_size: int = 224,
    weights=None,
    hidden_units: int = 512,
    dropout: float = 0.5,
    n_labels: int = N_LABELS,
) -> keras.Model:
    """Raw 0-255 image -> backbone preprocessing -> backbone -> `dense_head`.

    The backbone is a nested sub-model named `backbone_name`; its output (the last
    spatial feature map, after the final BN + relu) passes through an identity layer named
    `feature_map`, which is what Grad-CAM explains.
    """
    backbone = application(backbone_name, image_size, weights)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = preprocessing_layer(backbone_name)(inputs)
    x = backbone(x)
    # A top-level handle on the backbone's output: a nested model's own `.output` belongs
    # to its inner graph, so Grad-CAM could not tap it from the outer model.
    x = layers.Identity(name=FEATURE_MAP_LAYER)(x)
    outputs = dense_head(x, hidden_units=hidden_units, dropout=dropout, n_labels=n_labels)
    return keras.Model(inputs, outputs, name=f"cxr_{backbone_name}")


def backbone_layers(model: keras.Model) -> list[keras.Model]:
    """The backbone sub-models of a cxr model (empty for `simple_cnn`)."""
    return [layer for layer in model.layers if layer.name in BACKBONE_NAMES]


def set_backbone_trainable(
    model: keras.Model, trainable: bool, freeze_batchnorm: bool = False
) -> keras.Model:
    """Freeze (`trainable=False`) or unfreeze every backbone layer; the head is untouched.

    A frozen BatchNormalization layer runs in inference mode (moving statistics) in Keras 3
    even when the model is called with `training=True`. With `trainable=True` and
    `freeze_batchnorm=True`, the BatchNormalization layers stay frozen (the usual advice
    when fine-tuning with small batches). Compile the model again after calling this.
    """
    for backbone in backbone_layers(model):
        backbone.trainable = trainable
        # Set every inner layer too: Keras skips the recursion when the container's own
        # flag already has the requested value, which would leave frozen BN layers frozen.
        for layer in _walk_layers(backbone):
            is_batchnorm = isinstance(layer, layers.BatchNormalization)
            layer.trainable = trainable and not (freeze_batchnorm and is_batchnorm)
    return model


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> keras.Model:
    """Set the moving-statistics momentum of every BatchNormalization layer in the backbones.

    Keras' applications use 0.99, made for long ImageNet runs: the moving statistics then
    average the last ~100 steps. A randomly initialised backbone trained for a few hundred
    steps changes faster than that, so validation (which uses the moving statistics) sees a
    network from an epoch ago; 0.9 (~10 steps) keeps up. Saved with the model (layer config).
    """
    check_fraction(momentum, "batchnorm_momentum", include_boundaries="neither",
                   type_error=ValueError)
    for backbone in backbone_layers(model):
        for layer in _walk_layers(backbone):
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = float(momentum)
    return model


# keras.applications.EfficientNet's default drop_connect_rate: block b of B drops its
# residual branch with probability KERAS_DROP_CONNECT_RATE * b / B.
KERAS_DROP_CONNECT_RATE = 0.2


def _efficientnet_layers(model: keras.Model):
    """(backbone, layer) for every layer inside `model`'s EfficientNet backbones."""
    for backbone in backbone_layers(model):
        if backbone.name.startswith("efficientnet"):
            for layer in _walk_layers(backbone):
                yield backbone, layer


def set_stochastic_depth(model: keras.Model, rate: float) -> int:
    """Set EfficientNet's stochastic-depth rate (Keras' `drop_connect_rate`) in the backbones.

    Each EfficientNet block with a residual connection drops its branch with a probability
    that grows linearly to `rate` at the last block (Keras builds them at 0.2); those are the
    blocks' `*_drop` Dropout layers, rescaled here by `rate / 0.2`. Made for ImageNet runs of
    hundreds of epochs, it slows a random network trained for a few (docs/DESIGN.md); 0 turns
    it off. Saved with the model (layer config). Returns the number of layers changed; a
    ValueError if `model` has no EfficientNet backbone.
    """
    check_fraction(rate, "stochastic_depth", include_boundaries="left", type_error=ValueError)
    changed = 0
    for _, layer in _efficientnet_layers(model):
        if isinstance(layer, layers.Dropout) and layer.name.endswith("_drop"):
            layer.rate = float(layer.rate) * float(rate) / KERAS_DROP_CONNECT_RATE
            changed += 1
    if not changed:
        raise ValueError(f"stochastic_depth applies to EfficientNet backbones; model "
                         f"{model.name!r} has none")
    return changed


def zero_init_residual(model: keras.Model) -> int:
    """Start every EfficientNet residual block as the identity (Goyal et al. 2017).

    Sets the scale (gamma) of each residual block's last BatchNorm (`<block>_project_bn`, the
    one before `<block>_add`) to 0, so the block adds nothing until training grows that scale
    and the signal reaches the head through the skip connections from the first step. For
    random initialisation only (a pretrained block would be erased). Returns the number of
    blocks changed; a ValueError if `model` has no EfficientNet backbone with residual blocks.
    """
    changed = 0
    found = list(_efficientnet_layers(model))
    by_name = {(backbone.name, layer.name): layer for backbone, layer in found}
    for backbone, layer in found:
        if not layer.name.endswith("_add"):
            continue
        norm = by_name.get((backbone.name, layer.name[: -len("_add")] + "_project_bn"))
        if not isinstance(norm, layers.BatchNormalization) or norm.gamma is None:
            raise ValueError(f"zero_init_residual: residual block {layer.name!r} of "
                             f"{backbone.name!r} has no scaled `_project_bn` layer")
        norm.gamma.assign(np.zeros(norm.gamma.shape, dtype=norm.gamma.dtype))
        changed += 1
    if not changed:
        raise ValueError(f"zero_init_residual applies to EfficientNet backbones; model "
                         f"{model.name!r} has none with residual blocks")
    return changed


def load_weights_file(model: keras.Model, path: str | os.PathLike) -> str:
    """Load a local weights file into `model`; returns what it was: "model" or "backbone".

    Accepted, tried in this order:
    1. full-model weights saved from this very architecture and options
       (`model.save_weights("x.weights.h5")`, or a `.keras` file), loaded with
       `model.load_weights`;
    2. for a model with exactly one backbone, weights of the backbone alone (a Keras
       `.weights.h5` saved from the backbone, or the legacy `.h5` file keras.applications
       downloads, e.g. `densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5`), loaded
       with `backbone.load_weights`. A legacy `.h5` file into an EfficientNet backbone is
       taken to be Keras's ImageNet file and gets the same input fix as weights="imagenet".
    A file that fits neither raises ValueError naming the file and the model; the model's
    weights are then as before the call.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights={str(path)!r}: no such file. Pass 'none', 'imagenet' or the path of an "
            "existing weights file."
        )
    before = model.get_weights()
    model_error = _try_load(model, path)
    if model_error is None:
        return "model"
    _restore(model, before)
    backbones = backbone_layers(model)
    backbone_error = None
    if len(backbones) == 1:
        backbone = backbones[0]
        backbone_error = _try_load(backbone, path)
        if backbone_error is None:
            if backbone.name.startswith("efficientnet") and _is_legacy_h5(path):
                # The legacy file is Keras's ImageNet download: apply the ImageNet fix.
                fold_rescaling_into_normalization(backbone, 1.0 / np.sqrt(IMAGENET_STD))
            return "backbone"
        _restore(model, before)
    tried = f"full model {model.name!r}: {_short(model_error)}"
    if backbone_error is not None:
        tried += f"; backbone {backbones[0].name!r}: {_short(backbone_error)}"
    raise ValueError(
        f"weights file {str(path)!r} does not fit model {model.name!r}. It must hold the "
        "weights of this very architecture (same model name and options), "
        + ("or of its backbone alone" if len(backbones) == 1 else "saved with save_weights")
        + f". Tried {tried}"
    )


def _restore(model: keras.Model, weights: list) -> None:
    model.set_weights(weights)
    refresh_normalization(model)


def _is_legacy_h5(path: Path) -> bool:
    return path.suffix in (".h5", ".hdf5") and not path.name.endswith(".weights.h5")


def _short(error: BaseException, limit: int = 400) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _try_load(target: keras.Model, path: Path) -> Exception | None:
    """`target.load_weights(path)`; the exception if it does not fit, else None.

    A misfit makes Keras warn once per unmatched layer before it raises; those warnings
    are dropped (the raised error says it all), while a successful load's are re-issued.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            target.load_weights(path)
        except Exception as err:  # keras raises ValueError, KeyError, OSError... on a misfit
            return err
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return None
