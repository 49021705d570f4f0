"""Batches from the prepared store: channels, labels aligned, global per-epoch shuffling."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import tensorflow as tf  # noqa: E402

from cxr.data.loading import Augmentation, make_dataset_from_store  # noqa: E402

N_ROWS = 40_000  # NIH-sized split table, in patient order
BATCH = 32


@pytest.fixture(scope="module")
def nih_like():
    """Patient ids non-decreasing, ~3.6 images per patient; a 2x2 store tagged by row."""
    rng = np.random.default_rng(0)
    per_patient = rng.geometric(1 / 3.6, size=N_ROWS)
    patients = np.repeat(np.arange(1, len(per_patient) + 1), per_patient)[:N_ROWS]
    images = np.broadcast_to((np.arange(N_ROWS) % 251).astype(np.uint8)[:, None, None],
                             (N_ROWS, 2, 2)).copy()
    labels = np.zeros((N_ROWS, 14), np.float32)
    labels[:, 0] = np.arange(N_ROWS)  # the row, to find each example's patient
    return patients, images, labels


def _first_rows(dataset, batches: int = 3) -> np.ndarray:
    return np.concatenate([y[:, 0].numpy() for _, y in dataset.take(batches)]).astype(int)


def _spread(patients: np.ndarray, rows: np.ndarray) -> float:
    drawn = patients[rows]
    return (drawn.max() - drawn.min()) / (patients.max() - patients.min())


def test_first_batches_draw_patients_from_the_whole_split(nih_like):
    patients, images, labels = nih_like
    assert (np.diff(patients) >= 0).all() and 3.2 < N_ROWS / patients.max() < 4.0
    dataset = make_dataset_from_store(images, np.arange(N_ROWS), labels, BATCH, training=True,
                                      seed=7)
    epoch_one, epoch_two = _first_rows(dataset), _first_rows(dataset)
    assert _spread(patients, epoch_one) > 0.8 and _spread(patients, epoch_two) > 0.8
    assert (epoch_one != epoch_two).any()  # a fresh permutation each epoch
    again = make_dataset_from_store(images, np.arange(N_ROWS), labels, BATCH, training=True,
                                    seed=7)
    assert (_first_rows(again) == epoch_one).all() and (_first_rows(again) == epoch_two).all()
    other = make_dataset_from_store(images, np.arange(N_ROWS), labels, BATCH, training=True,
                                    seed=8)
    assert (_first_rows(other) != epoch_one).any()


def test_the_old_4096_image_buffer_trains_on_a_window_of_patients(nih_like):
    """What the store pipeline replaces: shuffle(4096) over rows in file order."""
    patients, _, _ = nih_like
    old = tf.data.Dataset.range(N_ROWS).shuffle(4096, seed=7).batch(BATCH)
    rows = np.concatenate([b.numpy() for b in old.take(3)])
    assert _spread(patients, rows) < 0.15  # the > 0.8 criterion above fails


def test_batches_are_rgb_floats_aligned_with_labels_in_order(nih_like):
    _, images, labels = nih_like
    rows = np.array([5, 3, 999, 0, 251, 7])
    dataset = make_dataset_from_store(images, rows, labels[rows], batch_size=4)
    batches = list(dataset)
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.shape == (6, 2, 2, 3) and x.dtype == np.float32
    assert (y[:, 0] == rows).all()  # evaluation keeps the order
    assert (x == (rows % 251)[:, None, None, None]).all()  # gray copied to 3 channels
    only_images = np.concatenate([b.numpy() for b in make_dataset_from_store(
        images, rows, None, batch_size=4)])
    assert (only_images == x).all()


def test_training_augments_and_evaluation_does_not():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 32, 32), dtype=np.uint8)
    labels = np.zeros((16, 14), np.float32)
    augmented = make_dataset_from_store(images, np.arange(16), labels, 16, training=True,
                                        augmentation=Augmentation(), seed=3)
    x = next(iter(augmented))[0].numpy()
    plain = next(iter(make_dataset_from_store(images, np.arange(16), labels, 16)))[0].numpy()
    assert x.shape == plain.shape == (16, 32, 32, 3)
    assert not np.isin(x, plain).all()
    assert (plain[..., 0] == images).all()


def test_bad_rows_and_labels_are_named(nih_like):
    _, images, labels = nih_like
    with pytest.raises(ValueError, match="row 40000 is outside"):
        make_dataset_from_store(images, [0, N_ROWS], None, 2)
    with pytest.raises(ValueError, match="labels has shape"):
        make_dataset_from_store(images, [0, 1], labels[:3], 2)
