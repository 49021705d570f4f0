"""Monte-Carlo dropout: T stochastic passes per image -> mean, std and a referral flag.

Only Dropout layers are stochastic; BatchNorm and every other layer stay in inference mode.
Two scopes (``layers=``):

- ``"head"`` (the fast default) samples the Dropout layers after the ``features`` layer only:
  the backbone runs once per image and the Dropout/Dense head is sampled T times in one
  vectorised call, with masks from ``numpy.random.default_rng((seed, image index))`` (a
  prediction depends on the seed alone, not on batching); ``mc_full_passes`` is the
  whole-model reference. Dropout layers *inside* a backbone are not sampled: EfficientNetB0
  has 9 stochastic-depth Dropout layers, the fusion model's EfficientNetB3 trunk 13;
  DenseNet121 and the simple CNN have none.
- ``"all"`` samples every Dropout layer, backbone ones included: T full forward passes in
  inference mode with the Dropout layers forced on (``sampling_every_dropout``); reproducible
  from the seed for the same batching.

This module holds the head scope and the entry point; the ``"all"`` scope is
:mod:`cxr.evaluation.mc_every`, what both share (MCResult, image batches, the mean and std
over passes) :mod:`cxr.evaluation.mc_common`. Both are re-exported here.

Why the fast path is exact, and what each scope costs: docs/DESIGN.md.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
from keras import layers, ops

from cxr.evaluation.mc_common import (
    DEFAULT_PASSES,
    MCResult,
    check_settings,
    collect,
    image_batches,
    mean_and_std,
)
from cxr.evaluation.mc_every import dropout_layers, mc_every_dropout, sampling_every_dropout
from cxr.labels import LABELS
from cxr.models import FEATURES_LAYER, split_at_features

__all__ = [
    "DEFAULT_PASSES",
    "DROPOUT_SCOPES",
    "DropoutSpec",
    "MCResult",
    "MonteCarloHead",
    "dropout_layers",
    "mc_dropout_predict",
    "mc_every_dropout",
    "mc_full_passes",
    "predictions_table",
    "sampling_every_dropout",
]

# Which Dropout layers Monte-Carlo dropout samples: the head's only, or every one.
DROPOUT_SCOPES = ("head", "all")
_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class DropoutSpec:
    """One Dropout layer of a head: where it is, its rate, and the width it drops."""

    position: int  # index in the head's layer list
    name: str
    rate: float
    width: int


class MonteCarloHead:
    """A cxr model split at `features`, with a head that can be sampled with explicit masks.

    `features(images)` runs the deterministic part (inference mode); `masks(...)` draws the
    dropout masks of some images; `sample(features, masks, passes)` applies the head for
    every pass at once, vectorised over passes and images.
    """

    def __init__(self, model: keras.Model):
        # No reference to `model` itself: `monte_carlo_head` caches heads by weak reference.
        self.feature_model, self.head = split_at_features(model)
        self.dropouts = _dropout_specs(model, self.head)

    @classmethod
    def of(cls, model: keras.Model) -> MonteCarloHead:
        """The (cached) MonteCarloHead of `model`.

        Cached because the feature model's first batch traces a graph (seconds for a
        DenseNet), which every later call on the same model can reuse.
        """
        head = _HEADS.get(model)
        if head is None:
            head = _HEADS[model] = cls(model)
        return head

    def features(self, images) -> np.ndarray:
        """(n, D) output of the `features` layer, every layer in inference mode."""
        return np.asarray(self.feature_model.predict_on_batch(images))

    def masks(self, seed: int, first_index: int, n_images: int, passes: int) -> list[np.ndarray]:
        """Keep-masks of images `first_index ... first_index + n_images - 1`.

        One (passes, n_images, width) bool array per Dropout layer of the head (in head
        order). Image i's masks come from `numpy.random.default_rng((seed, i))` alone.
        """
        per_image = [_image_masks(self.dropouts, seed, first_index + i, passes)
                     for i in range(n_images)]
        return [
            np.stack([masks[k] for masks in per_image], axis=1)
            if per_image else np.ones((passes, 0, spec.width), dtype=bool)
            for k, spec in enumerate(self.dropouts)
        ]

    def sample(self, features, masks: Sequence[np.ndarray], passes: int) -> np.ndarray:
        """(T, n, K) float32 probabilities: the head applied with each pass's masks.

        `masks` is what `masks(...)` returns for these images, with `passes` = T rows each.

        The features are tiled to (T * n, D) and the head runs once on all of them; a
        Dropout layer multiplies by its mask and divides by (1 - rate) (inverted dropout,
        as Keras does); a rate-0 layer is left out, so a rate-0 head is exactly the
        inference-mode head.
        """
        features = ops.convert_to_tensor(features)
        n, width = features.shape
        for spec, mask in zip(self.dropouts, masks, strict=True):
            if mask.shape != (passes, n, spec.width):
                raise ValueError(
                    f"mask of dropout layer {spec.name!r} has shape {mask.shape}; expected "
                    f"(passes, images, width) = {(passes, n, spec.width)}."
                )
        active = [(spec, mask) for spec, mask in zip(self.dropouts, masks, strict=True)
                  if spec.rate > 0.0]
        if not active:
            # A deterministic head runs once: tiled, BLAS may round identical rows
            # differently in the last bit, and the std would not be exactly 0.
            once = ops.convert_to_numpy(self._apply(features, {}))
            return np.broadcast_to(once, (passes, *once.shape)).copy()
        tiled = ops.reshape(ops.broadcast_to(features[None], (passes, n, width)), (passes * n, -1))
        scales = {
            spec.position: mask.reshape(passes * n, spec.width).astype(np.float32)
            / (1.0 - spec.rate)
            for spec, mask in active
        }
        probabilities = ops.convert_to_numpy(self._apply(tiled, scales))
        return probabilities.reshape(passes, n, -1)

    def _apply(self, x, scales: dict[int, np.ndarray]):
        """The head on 2-D `x`; the Dropout at head position p multiplies by `scales[p]`
        (mask / (1 - rate)) and is the identity when p has no entry."""
        for position, layer in enumerate(self.head):
            if isinstance(layer, layers.Dense):
                x = layer(x)
            elif position in scales:
                x = x * ops.cast(scales[position], x.dtype)
        return ops.cast(x, "float32")


def mc_dropout_predict(
    model: keras.Model,
    data,
    passes: int = DEFAULT_PASSES,
    seed: int = 0,
    batch_size: int = 64,
    keep_samples: bool = False,
    layers: str = "head",
    progress: Callable[[int], None] | None = None,
) -> MCResult:
    """Monte-Carlo dropout predictions, T stochastic passes per image.

    With `layers="head"` (default): features once per image, the head's Dropout layers
    sampled T times (backbone Dropout layers, e.g. EfficientNet's stochastic depth, stay
    off). With `layers="all"`: T full forward passes sampling every Dropout layer of the
    model, BatchNorm in inference mode (`mc_every_dropout`).

    Args:
        model: a cxr model (a `features` layer, then a Dropout/Dense-only head).
        data: images as a numpy array (N, H, W, 3) of raw 0-255 pixels, a
            keras.utils.PyDataset of such batches (or (images, labels) tuples), or a
            tf.data.Dataset yielding batches of images or (images, labels[, ...]) tuples
            (a dataset of single images is batched with `batch_size`).
        passes: T, the number of stochastic passes per image.
        seed: the masks of image i are drawn from `numpy.random.default_rng((seed, i))`,
            so results do not depend on `batch_size` or on the dataset's batching.
        batch_size: images per chunk for numpy input. Memory per chunk is about
            `passes * batch_size * (D + hidden)` floats for the sampled head.
        keep_samples: keep the (T, N, K) per-pass probabilities in `MCResult.samples`.
        layers: "head" or "all", which Dropout layers are sampled (see above).
        progress: called with the number of images of each batch once it is sampled
            (e.g. :meth:`cxr.progress.Progress.advance`).

    Returns:
        MCResult with mean and std over the passes, in the order of `data`.
    """
    if layers not in DROPOUT_SCOPES:
        raise ValueError(f"layers = {layers!r}; allowed: {', '.join(map(repr, DROPOUT_SCOPES))}"
                         " (which Dropout layers Monte-Carlo dropout samples).")
    if layers == "all":
        return mc_every_dropout(model, data, passes, seed, batch_size, keep_samples, progress)
    passes, seed, batch_size = check_settings(passes, seed, batch_size)
    head = MonteCarloHead.of(model)

    def sampled_batches() -> Iterator[np.ndarray]:
        first_index = 0
        for images in image_batches(data, batch_size):
            n_images = int(images.shape[0])
            if n_images == 0:
                continue
            masks = head.masks(seed, first_index, n_images, passes)
            yield head.sample(head.features(images), masks, passes)
            first_index += n_images
            if progress is not None:
                progress(n_images)

    return collect(sampled_batches(), keep_samples)


def mc_full_passes(
    model: keras.Model,
    images,
    passes: int = DEFAULT_PASSES,
    seed: int = 0,
    batch_size: int = 64,
) -> MCResult:
    """The reference: T full forward passes, the backbone recomputed in every pass.

    BatchNormalization (and every other non-dropout layer) runs in inference mode, and pass
    t of image i uses the same dropout masks as `mc_dropout_predict`, so both give the same
    numbers to float tolerance; this one costs T backbone runs instead of one. It keeps
    every mask in memory (T * N * width bools per Dropout layer): for tests and benchmarks.
    Returns an MCResult with `samples`.
    """
    passes, seed, batch_size = check_settings(passes, seed, batch_size)
    head = MonteCarloHead.of(model)
    batches = list(image_batches(images, batch_size))
    starts = np.cumsum([0] + [int(batch.shape[0]) for batch in batches])
    masks = [head.masks(seed, int(start), int(batch.shape[0]), passes)
             for start, batch in zip(starts, batches, strict=False)]
    samples = np.stack([
        np.concatenate([
            head.sample(head.features(batch), [mask[t : t + 1] for mask in batch_masks], 1)[0]
            for batch, batch_masks in zip(batches, masks, strict=True)
        ])
        for t in range(passes)
    ])
    return MCResult(samples, *mean_and_std(samples))


def predictions_table(
    names: Sequence[str],
    result: MCResult,
    threshold: float,
    labels: Sequence[str] = LABELS,
) -> pd.DataFrame:
    """One row per image: `Image Index`, then `<label>_mean`, `<label>_std`, `<label>_refer`
    (0/1) for each finding in `labels` order, then `refer_any` (0/1)."""
    names = [str(name) for name in names]
    labels = list(labels)
    mean, std = np.asarray(result.mean), np.asarray(result.std)
    if mean.shape != (len(names), len(labels)) or std.shape != mean.shape:
        raise ValueError(
            f"predictions_table: result has mean {mean.shape} and std {std.shape}; expected "
            f"({len(names)}, {len(labels)}) for {len(names)} names and {len(labels)} labels."
        )
    refer = result.refer(threshold)
    columns: dict[str, object] = {"Image Index": names}
    for k, label in enumerate(labels):
        columns[f"{label}_mean"] = mean[:, k]
        columns[f"{label}_std"] = std[:, k]
        columns[f"{label}_refer"] = refer[:, k].astype(np.int64)
    columns["refer_any"] = refer.any(axis=1).astype(np.int64)
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- helpers


def _dropout_specs(model: keras.Model, head: Sequence[keras.layers.Layer]) -> list[DropoutSpec]:
    """The head's Dropout layers with the width each one sees (features width, Dense units)."""
    width = model.get_layer(FEATURES_LAYER).output.shape[-1]
    specs = []
    for position, layer in enumerate(head):
        if isinstance(layer, layers.Dense):
            width = layer.units
        elif type(layer) is layers.Dropout and layer.noise_shape is None:
            specs.append(DropoutSpec(position, layer.name, float(layer.rate), int(width)))
        else:
            raise ValueError(
                f"Monte-Carlo dropout supports plain Dropout layers (no noise_shape) in the head "
                f"of model {model.name!r}; layer {layer.name!r} is a {type(layer).__name__}"
                + (f" with noise_shape={layer.noise_shape}" if type(layer) is layers.Dropout
                   else "") + "."
            )
    return specs


def _image_masks(specs: Sequence[DropoutSpec], seed: int, image_index: int,
                 passes: int) -> list[np.ndarray]:
    """(passes, width) keep-masks of one image, one per Dropout layer, in head order."""
    rng = np.random.default_rng((seed, image_index))
    masks = []
    for spec in specs:
        if spec.rate == 0.0:
            masks.append(np.ones((passes, spec.width), dtype=bool))
        else:
            masks.append(rng.random((passes, spec.width), dtype=np.float32) >= spec.rate)
    return masks
