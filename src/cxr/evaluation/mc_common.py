"""What both Monte-Carlo dropout scopes share: the result, the image batches, the summary.

:mod:`cxr.evaluation.uncertainty` samples the head's dropout (``layers="head"``) and
:mod:`cxr.evaluation.mc_every` every Dropout layer (``layers="all"``); both read their images
through :func:`image_batches` and reduce the (T, n, K) passes with :func:`collect`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from cxr import backend
from cxr.backend import tf  # imported on first use: the TensorFlow backend only
from cxr.validation import check_int, check_number

DEFAULT_PASSES = 25


@dataclass
class MCResult:
    """Monte-Carlo dropout predictions for N images and K findings.

    Attributes:
        samples: (T, N, K) float32 probabilities of every pass, or None when not kept
            (they take T * N * K * 4 bytes).
        mean: (N, K) float32 mean probability over the T passes.
        std: (N, K) float32 standard deviation over the T passes (population, ddof=0).
    """

    samples: np.ndarray | None
    mean: np.ndarray
    std: np.ndarray

    def refer(self, threshold: float) -> np.ndarray:
        """(N, K) bool: True where the model is too uncertain (`std > threshold`)."""
        return self.std > check_threshold(threshold)


def collect(sampled_batches: Iterable[np.ndarray], keep_samples: bool) -> MCResult:
    """Mean and std over the passes of every (T, n, K) batch of samples, in order."""
    means, stds, kept = [], [], []
    for samples in sampled_batches:
        mean, std = mean_and_std(samples)
        means.append(mean)
        stds.append(std)
        if keep_samples:
            kept.append(samples)
    if not means:
        raise ValueError("mc_dropout_predict: data holds no images.")
    return MCResult(
        samples=np.concatenate(kept, axis=1) if keep_samples else None,
        mean=np.concatenate(means),
        std=np.concatenate(stds),
    )


def mean_and_std(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over passes, accumulated in float64: T equal samples give std 0 exactly."""
    mean = samples.mean(axis=0, dtype=np.float64)
    std = samples.std(axis=0, dtype=np.float64)
    return mean.astype(np.float32), std.astype(np.float32)


def image_batches(data, batch_size: int) -> Iterator:
    """Batches of images from a numpy array, a keras.utils.PyDataset (other backends' store
    batches) or a tf.data.Dataset (labels dropped)."""
    if isinstance(data, keras.utils.PyDataset):
        for index in range(len(data)):
            element = data[index]
            images = element[0] if isinstance(element, tuple) else element
            yield ops.convert_to_numpy(images).astype(np.float32, copy=False)
        return
    if backend.tensorflow_imported() and isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        image_spec = spec[0] if isinstance(spec, tuple) else spec
        if not isinstance(image_spec, tf.TensorSpec):
            raise ValueError(
                "data: a tf.data.Dataset must yield images or (images, labels) tuples; "
                f"its element_spec is {spec}."
            )
        if image_spec.shape.rank == 3:
            data = data.batch(batch_size)
        elif image_spec.shape.rank != 4:
            raise ValueError(
                f"data: dataset images must be (H, W, C) or batches (n, H, W, C); "
                f"element_spec is {spec}."
            )
        for element in data:
            # float32 always: a uint8 batch would make the feature model trace a second graph.
            yield tf.cast(element[0] if isinstance(element, tuple) else element, tf.float32)
        return
    if isinstance(data, np.ndarray):
        if data.ndim != 4:
            raise ValueError(
                f"data: a numpy array of images must have shape (N, H, W, C); got {data.shape}."
            )
        for start in range(0, len(data), batch_size):
            yield data[start : start + batch_size].astype(np.float32, copy=False)
        return
    raise TypeError(
        f"data must be a numpy array (N, H, W, 3), a keras.utils.PyDataset or a "
        f"tf.data.Dataset; got {type(data).__name__}."
    )


def check_settings(passes, seed, batch_size) -> tuple[int, int, int]:
    return (check_int(passes, "passes", min_val=1, type_error=ValueError),
            check_int(seed, "seed", min_val=0, type_error=ValueError),
            check_int(batch_size, "batch_size", min_val=1, type_error=ValueError))


def check_threshold(threshold) -> float:
    return check_number(threshold, "threshold", min_val=0, type_error=ValueError)
