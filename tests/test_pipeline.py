from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.data.loading import Augmentation, decode_and_resize, make_dataset


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        pixels = rng.integers(0, 256, size=(80, 96), dtype=np.uint8)
        pixels[:, :48] //= 4  # a dark left half, so a horizontal flip is visible
        path = folder / f"{i:08d}_000.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(str(path))
    rgba = folder / "rgba.png"
    Image.fromarray(rng.integers(0, 256, size=(50, 50, 4), dtype=np.uint8), mode="RGBA").save(rgba)
    return paths, str(rgba)


def _collect(dataset):
    return np.concatenate([batch[0].numpy() for batch in dataset])


def test_decode_gives_three_equal_channels_at_size(images):
    paths, rgba = images
    for path in (paths[0], rgba):
        image = decode_and_resize(path, 32).numpy()
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert np.array_equal(image[..., 0], image[..., 1])
        assert np.array_equal(image[..., 0], image[..., 2])


def test_eval_dataset_is_ordered_unaugmented_float_0_255(images):
    paths, _ = images
    labels = np.eye(14, dtype=np.float32)[: len(paths)]
    dataset = make_dataset(paths, labels, 32, 5, training=False, augmentation=Augmentation())
    batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 255
    assert np.array_equal(y, labels)
    expected = np.stack([decode_and_resize(p, 32).numpy() for p in paths]).astype(np.float32)
    assert np.array_equal(x, expected)


def test_augmentation_applies_to_training_only_and_is_seeded(images):
    paths, _ = images
    labels = np.zeros((len(paths), 14), np.float32)
    plain = np.stack([decode_and_resize(p, 32).numpy() for p in paths]).astype(np.float32)
    train = make_dataset(paths, labels, 32, 4, training=True, augmentation=Augmentation(), seed=3)
    first, second = _collect(train), _collect(train)
    again = _collect(make_dataset(paths, labels, 32, 4, training=True,
                                  augmentation=Augmentation(), seed=3))
    assert np.array_equal(first, again), "same seed must give the same augmented stream"
    assert not np.array_equal(first, second), "each epoch draws new augmentations"
    # No augmented image equals any plain one: flips, rotations, zoom and brightness all moved it.
    distances = np.abs(first[:, None] - plain[None]).mean(axis=(2, 3, 4))
    assert distances.min() > 1.0
    # With augmentation switched off, training only shuffles: the same multiset of images.
    shuffled = _collect(make_dataset(paths, labels, 32, 4, training=True, augmentation=None))
    assert np.allclose(np.sort(shuffled.reshape(len(paths), -1).sum(1)),
                       np.sort(plain.reshape(len(paths), -1).sum(1)))


def test_brightness_only_shifts_within_keras_range(images):
    paths, _ = images
    labels = np.zeros((len(paths), 14), np.float32)
    only_brightness = Augmentation(flip=False, rotation=0.0, zoom=0.0, brightness=0.1)
    x = _collect(make_dataset(paths, labels, 32, 12, training=True,
                              augmentation=only_brightness, shuffle_buffer=1))
    plain = np.stack([decode_and_resize(p, 32).numpy() for p in paths]).astype(np.float32)
    shift = x - plain
    inside = (plain > 30) & (plain < 220)  # away from clipping at 0 and 255
    per_image = [np.unique(np.round(s[m], 3)) for s, m in zip(shift, inside, strict=True)]
    assert all(len(u) == 1 for u in per_image), "brightness adds one delta per image"
    assert max(abs(u[0]) for u in per_image) <= 0.1 * 255 + 1e-3


def _own_copies(paths, folder: Path) -> list[str]:
    folder.mkdir()
    copies = [folder / Path(path).name for path in paths]
    for source, copy in zip(paths, copies, strict=True):
        copy.write_bytes(Path(source).read_bytes())
    return [str(copy) for copy in copies]


def _overwrite_with_white(paths) -> None:
    for path in paths:
        Image.fromarray(np.full((80, 96), 255, np.uint8), mode="L").save(path)


def test_file_cache_is_written_and_reused(images, tmp_path):
    """After the first pass the images come from the cache file, not from the PNGs: the PNGs
    are overwritten in between and a second dataset still yields the first pass's pixels."""
    paths = _own_copies(images[0], tmp_path / "pngs")
    labels = np.zeros((len(paths), 14), np.float32)
    cache = tmp_path / "cache"
    first = _collect(make_dataset(paths, labels, 32, 4, cache=str(cache)))
    assert any(cache.iterdir())
    _overwrite_with_white(paths)
    uncached = _collect(make_dataset(paths, labels, 32, 4, cache="none"))
    assert (uncached == 255).all() and not (first == 255).all()  # the files did change
    second = _collect(make_dataset(paths, labels, 32, 4, cache=str(cache)))
    assert np.array_equal(first, second)


def test_memory_cache_serves_later_epochs_without_reading_the_files(images, tmp_path):
    paths = _own_copies(images[0], tmp_path / "pngs")
    dataset = make_dataset(paths, np.zeros((len(paths), 14), np.float32), 32, 4, cache="memory")
    first_epoch = _collect(dataset)
    _overwrite_with_white(paths)
    assert np.array_equal(_collect(dataset), first_epoch)


def test_bad_inputs_are_named(images):
    paths, _ = images
    with pytest.raises(ValueError, match="labels has shape"):
        make_dataset(paths, np.zeros((3, 14)), 32, 4)
    with pytest.raises(ValueError, match="paths is empty"):
        make_dataset([], None, 32, 4)
