"""tf.data input: decode, resize, (cache), augment the training split, batch, prefetch.

Images leave this pipeline as float32 RGB in the 0-255 range. Backbone-specific preprocessing
(DenseNet's ImageNet normalisation, EfficientNet's built-in rescaling) lives inside each model
(`cxr.models.preprocessing`), so the same pipeline feeds every model and a saved model takes
raw pixels wherever it is used.

Two CPU lessons are baked in:
- Autotune is off and parallelism/prefetch are explicit: with autotuned pipelines, fit/predict
  were seen to stall for seconds at the end of a call on a 2-core machine.
- Decoding a 1024 px PNG costs far more than the whole small-image step. Training and
  evaluation read the prepared store (`cxr.data.prepare`: every image decoded and resized once)
  through :func:`make_dataset_from_store`; :func:`make_dataset` decodes files (with an optional
  resize `cache`) for `cxr predict` on arbitrary images.

Shuffling. NIH's rows (and so the split tables) are in patient order; a `shuffle` buffer of a
few thousand *images* then trains on a sliding window of patients. The store pipeline shuffles
the integer row positions of the whole split instead (a buffer of len(split) ints, a few
hundred kB even for NIH, not images) with a fresh seeded permutation every epoch, and only then
gathers the images of each batch.

Resumable streams. A dataset that reshuffles on each iteration draws its orders (and its
augmentations) from generators that live in the process: a training resumed in a new process
would start them over and see epoch 1's order again. With ``epoch=`` the store pipeline instead
yields one fixed epoch whose permutation and augmentation seeds derive from ``(seed, epoch)``
alone (:func:`epoch_seed`), so epoch 3 is the same whether or not epochs 1-2 ran in this
process; training builds one such dataset per epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from cxr import backend
from cxr.backend import tf  # imported on first use: the TensorFlow backend only


@dataclass(frozen=True)
class Augmentation:
    """Keras preprocessing-layer semantics: factors are fractions (rotation of 2*pi)."""

    flip: bool = True
    rotation: float = 0.1
    zoom: float = 0.1
    brightness: float = 0.1


def decode_and_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """PNG/JPEG file -> uint8 (size, size, 3). Grayscale and RGBA files both become 3 channels."""
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=1, expand_animations=False)
    image.set_shape([None, None, 1])
    # antialias: NIH originals are 1024 px; without it a 224 px resize aliases fine texture.
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return tf.image.grayscale_to_rgb(image)


def epoch_seed(seed: int, epoch: int | Sequence[int]) -> int:
    """A 31-bit seed for one epoch's stream, a pure function of ``(seed, *epoch)``.

    ``epoch`` is an int or a tuple of ints (e.g. ``(phase, epoch)``); NumPy's SeedSequence
    mixes them, so neighbouring epochs get unrelated seeds.
    """
    parts = [epoch] if isinstance(epoch, int | np.integer) else list(epoch)
    entropy = [int(seed), *(int(p) for p in parts)]
    if any(p < 0 for p in entropy):
        raise ValueError(f"epoch_seed: seed and epoch must be >= 0; got {entropy}")
    # below 2**31 - 8: the augmentation layers use seed, seed + 1, ..., seed + 3
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) % (2**31 - 8)


def augmentation_model(augmentation: Augmentation, seed: int) -> keras.Sequential:
    """The training-time augmentation as named Keras layers (applied inside tf.data)."""
    layers: list[keras.layers.Layer] = []
    if augmentation.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed, name="flip"))
    if augmentation.rotation:
        layers.append(keras.layers.RandomRotation(augmentation.rotation, fill_mode="constant",
                                                  seed=seed + 1, name="rotate"))
    if augmentation.zoom:
        layers.append(keras.layers.RandomZoom(augmentation.zoom, fill_mode="constant",
                                              seed=seed + 2, name="zoom"))
    if augmentation.brightness:
        layers.append(keras.layers.RandomBrightness(augmentation.brightness, value_range=(0, 255),
                                                    seed=seed + 3, name="brightness"))
    return keras.Sequential(layers, name="augmentation")


def _cache_file(cache: str, paths: Sequence[str], image_size: int) -> str:
    """A tf.data cache file name keyed by the image list and size (stale caches never match)."""
    digest = hashlib.sha256(("\n".join(paths) + f"\n{image_size}").encode()).hexdigest()[:16]
    directory = Path(cache)
    directory.mkdir(parents=True, exist_ok=True)
    return str(directory / f"images_{image_size}px_{digest}")


def make_dataset(
    paths: Sequence[str],
    labels: np.ndarray | None,
    image_size: int,
    batch_size: int,
    training: bool = False,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    cache: str = "none",
    parallel_calls: int = 2,
    prefetch: int = 2,
    shuffle_buffer: int = 2048,
) -> tf.data.Dataset:
    """Batches of (images float32 0-255, labels float32) — or images alone when labels is None.

    training=True shuffles (seeded, reshuffled every epoch) and augments; evaluation data is
    neither shuffled nor augmented, so predictions line up with `paths`.
    cache: "none", "memory", or a directory for tf.data cache files.
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise ValueError("make_dataset: paths is empty; expected at least one image path")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != len(paths):
            raise ValueError(f"make_dataset: labels has shape {labels.shape}; expected "
                             f"({len(paths)}, n_classes) to match paths")
    images = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: decode_and_resize(p, image_size), num_parallel_calls=parallel_calls,
        deterministic=True)
    if cache == "memory":
        images = images.cache()
    elif cache and cache != "none":
        images = images.cache(_cache_file(cache, paths, image_size))
    dataset = images if labels is None else tf.data.Dataset.zip(
        (images, tf.data.Dataset.from_tensor_slices(labels)))
    if training:
        dataset = dataset.shuffle(min(shuffle_buffer, len(paths)), seed=seed,
                                  reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    to_float = _to_float if labels is not None else (lambda x: tf.cast(x, tf.float32))
    dataset = dataset.map(to_float, num_parallel_calls=parallel_calls, deterministic=True)
    if training and augmentation is not None:
        augment = augmentation_model(augmentation, seed)
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y),
                              num_parallel_calls=1, deterministic=True)
    dataset = dataset.prefetch(prefetch)
    return dataset.with_options(_options(parallel_calls))


def check_store_inputs(who: str, images: np.ndarray, rows, labels):
    """``rows`` as int64 and ``labels`` as float32 (or None), after checking them and the
    store's ``images`` (uint8, count x size x size); errors start with ``who``."""
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{who}: images is {images.dtype} {images.shape}; "
                         f"expected uint8 (count, size, size)")
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or len(rows) == 0:
        raise ValueError(f"{who}: rows has shape {rows.shape}; expected a "
                         f"non-empty 1-D array of store rows")
    if rows.min() < 0 or rows.max() >= len(images):
        bad = int(rows[(rows < 0) | (rows >= len(images))][0])
        raise ValueError(f"{who}: row {bad} is outside the store's {len(images)} images")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2 or labels.shape[0] != len(rows):
            raise ValueError(f"{who}: labels has shape {labels.shape}; "
                             f"expected ({len(rows)}, n_classes) to match rows")
    return rows, labels


def make_dataset_from_store(
    images: np.ndarray,
    rows: Sequence[int] | np.ndarray,
    labels: np.ndarray | None,
    batch_size: int,
    training: bool = False,
    augmentation: Augmentation | None = None,
    seed: int = 0,
    parallel_calls: int = 2,
    prefetch: int = 2,
    epoch: int | Sequence[int] | None = None,
) -> tf.data.Dataset:
    """Batches of (images float32 0-255 RGB, labels float32) from a prepared uint8 gray store.

    Args:
        images: (count, size, size) uint8, e.g. ``open_store(...).images`` (a memmap: only the
            rows of each batch are read; pass ``np.asarray(...)`` to hold a small store in RAM).
        rows: the store row of each example (``ImageStore.rows_for(split["Image Index"])``).
        labels: (len(rows), n_classes) aligned with ``rows``, or None for images alone.
        training: True = global shuffle (a new seeded permutation of all of ``rows`` each
            epoch: the buffer holds len(rows) ints) and augmentation; False keeps the order of
            ``rows``, so predictions line up with them.
        augmentation: Keras preprocessing layers (:func:`augmentation_model`), training only.
        epoch: training only. None: one dataset for every epoch, reshuffled and re-augmented
            on each iteration by in-process generators (not reproducible across a restart).
            An int or tuple of ints: this one epoch, its permutation and augmentation seeded
            by ``epoch_seed(seed, epoch)``; every iteration yields the same batches, and a new
            process building the same epoch gets them too (resumable training).

    Gray is expanded to 3 equal channels on the fly, as the models expect raw 0-255 RGB.
    On a Keras backend other than TensorFlow the same batches come from a
    :class:`cxr.data.pydataset.StoreBatches` (a ``keras.utils.PyDataset``) instead.
    """
    images = np.asarray(images) if not isinstance(images, np.memmap) else images
    rows, labels = check_store_inputs("make_dataset_from_store", images, rows, labels)
    if epoch is not None and not training:
        raise ValueError("make_dataset_from_store: epoch is for training datasets only")
    if not backend.is_tensorflow():  # other Keras backends: a PyDataset, no TensorFlow
        from cxr.data.pydataset import StoreBatches

        if epoch is not None:  # one epoch: its order and augmentation from (seed, epoch) alone
            seed = epoch_seed(seed, epoch)
        return StoreBatches(images, rows, labels, batch_size, training=training,
                            augmentation=augmentation, seed=seed, workers=parallel_calls,
                            max_queue_size=max(prefetch, 1))
    size = images.shape[1]

    def gather(positions: np.ndarray) -> np.ndarray:
        return np.asarray(images[rows[positions]])

    def load(positions):
        batch = tf.numpy_function(gather, [positions], tf.uint8, stateful=False)
        batch.set_shape([None, size, size])
        rgb = tf.image.grayscale_to_rgb(tf.cast(batch, tf.float32)[..., None])
        if labels is None:
            return rgb
        return rgb, tf.gather(labels_tensor, positions)

    labels_tensor = None if labels is None else tf.constant(labels)
    if epoch is None:
        dataset = tf.data.Dataset.range(len(rows))
        if training:
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    else:
        seed = epoch_seed(seed, epoch)
        order = np.random.default_rng(seed).permutation(len(rows))
        dataset = tf.data.Dataset.from_tensor_slices(order)
    dataset = dataset.batch(batch_size).map(load, num_parallel_calls=parallel_calls,
                                            deterministic=True)
    if training and augmentation is not None:
        if labels is None:
            raise ValueError("make_dataset_from_store: augmentation needs labels (training)")
        augment = augmentation_model(augmentation, seed)
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y),
                              num_parallel_calls=1, deterministic=True)
    dataset = dataset.prefetch(prefetch)
    return dataset.with_options(_options(parallel_calls))


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _options(parallel_calls: int) -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    options.threading.private_threadpool_size = max(parallel_calls, 1)
    return options
