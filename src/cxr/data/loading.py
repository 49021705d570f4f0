"""tf.data input: decode, resize, (cache), augment the training split, batch, prefetch.

Images leave this pipeline as float32 RGB in the 0-255 range. Backbone-specific preprocessing
(DenseNet's ImageNet normalisation, EfficientNet's built-in rescaling) lives inside each model
(`cxr.models.preprocessing`), so the same pipeline feeds every model and a saved model takes
raw pixels wherever it is used.

Two CPU lessons are baked in:
- Autotune is off and parallelism/prefetch are explicit: with autotuned pipelines, fit/predict
  were seen to stall for seconds at the end of a call on a 2-core machine.
- Decoding a 1024 px PNG costs far more than the whole small-image step; `cache` stores the
  resized uint8 images (in memory or in tf.data cache files) so only the first epoch decodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf


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


def _to_float(images, labels):
    return tf.cast(images, tf.float32), labels


def _options(parallel_calls: int) -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    options.threading.private_threadpool_size = max(parallel_calls, 1)
    return options
