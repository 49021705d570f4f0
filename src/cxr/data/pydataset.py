"""Batches from the prepared image store for Keras backends other than TensorFlow.

:func:`cxr.data.loading.make_dataset_from_store` returns a :class:`StoreBatches` when Keras
runs on JAX or PyTorch: the same batches as its tf.data pipeline (float32 0-255 RGB from the
uint8 gray store, labels float32), shuffled and augmented the same way, without TensorFlow.

* Shuffling: training batches follow a permutation of all the split's rows drawn from
  ``numpy.random.default_rng((seed, epoch))``, so an epoch's order depends on the seed and the
  epoch number alone. The epoch number advances when Keras ends a pass over the data
  (``on_epoch_end``); :meth:`StoreBatches.set_epoch` sets it (a resumed run).
* Augmentation: the Keras preprocessing layers of :func:`cxr.data.loading.augmentation_model`
  (flip, rotation, zoom, brightness, with the factors of ``pipeline.augment``), applied per
  batch with a stateless seed drawn from ``(seed, epoch, batch index, layer)``: a batch's
  augmentation does not depend on which worker thread builds it, or when.

The random draws are not TensorFlow's, so the augmented pixels differ from the tf.data
pipeline's for the same seed; the distribution of the transformations is the same.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from cxr.data.loading import Augmentation, augmentation_model, check_store_inputs


class StoreBatches(keras.utils.PyDataset):
    """``keras.utils.PyDataset`` of (images, labels) batches (images alone when labels is None).

    Args:
        images: (count, size, size) uint8 gray store (a memmap is read batch by batch).
        rows: the store row of each example, in the order predictions must follow.
        labels: (len(rows), n_classes) or None.
        batch_size: examples per batch (the last batch holds the rest).
        training: True = a new seeded permutation every epoch, and augmentation.
        augmentation: Keras preprocessing-layer factors (training only).
        seed: the seed of the permutations and augmentations.
        workers, max_queue_size: Keras's PyDataset threads (never processes) and queue.
    """

    def __init__(self, images: np.ndarray, rows, labels: np.ndarray | None, batch_size: int,
                 training: bool = False, augmentation: Augmentation | None = None,
                 seed: int = 0, workers: int = 1, max_queue_size: int = 10):
        super().__init__(workers=max(int(workers), 1), use_multiprocessing=False,
                         max_queue_size=max_queue_size)
        rows, labels = check_store_inputs("StoreBatches", images, rows, labels)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"StoreBatches: batch_size must be a positive int; got "
                             f"{batch_size!r}")
        if training and augmentation is not None and labels is None:
            raise ValueError("make_dataset_from_store: augmentation needs labels (training)")
        self.images, self.rows, self.labels = images, rows, labels
        self.batch_size, self.training, self.seed = batch_size, bool(training), int(seed)
        self.augment = (augmentation_model(augmentation, self.seed).layers
                        if training and augmentation is not None else [])
        self.set_epoch(0)

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``'s permutation and augmentations from the next batch on."""
        self._epoch = int(epoch)
        self._order = (np.random.default_rng((self.seed, self._epoch)).permutation(len(self.rows))
                       if self.training else np.arange(len(self.rows)))

    def order(self) -> np.ndarray:
        """Positions into ``rows`` in the order this epoch serves them."""
        return self._order.copy()

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __getitem__(self, index: int):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        positions = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        gray = np.asarray(self.images[self.rows[positions]], dtype=np.float32)
        batch = np.repeat(gray[..., None], 3, axis=-1)
        if self.augment:
            batch = self._augmented(batch, index)
        if self.labels is None:
            return batch
        return batch, self.labels[positions]

    def _augmented(self, batch: np.ndarray, index: int) -> np.ndarray:
        seeds = np.random.SeedSequence((self.seed, self._epoch, index)).generate_state(
            len(self.augment))
        x = keras.ops.convert_to_tensor(batch)
        for layer, seed in zip(self.augment, seeds, strict=True):
            transformation = layer.get_random_transformation(x, training=True, seed=int(seed))
            x = layer.transform_images(x, transformation, training=True)
        return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))

    def on_epoch_end(self) -> None:
        self.set_epoch(self._epoch + 1)
