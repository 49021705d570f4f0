"""The one gray decoder and the prepared image store."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr.data.prepare import (
    StoreError,
    open_store,
    prepare_store,
    read_gray,
    read_size,
    resize_gray,
)

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (12, 9), dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def test_8bit_gray_png_is_read_as_stored(tmp_path):
    Image.fromarray(GRAY, mode="L").save(tmp_path / "g.png")
    out = read_gray(tmp_path / "g.png")
    assert out.dtype == np.uint8 and out.shape == (12, 9)
    assert (out == GRAY).all()
    assert read_size(tmp_path / "g.png") == (9, 12)  # (width, height)


def test_gray_channel_stored_as_rgb_or_rgba_comes_back_unchanged(tmp_path):
    rgb = np.repeat(GRAY[..., None], 3, axis=2)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    alpha = RNG.integers(0, 256, GRAY.shape, dtype=np.uint8)  # alpha is dropped, not blended
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([GRAY, alpha]), mode="LA").save(tmp_path / "la.png")
    for name in ("rgb.png", "rgba.png", "la.png"):
        assert (read_gray(tmp_path / name) == GRAY).all(), name


def test_colour_rgb_becomes_luminance(tmp_path):
    rgb = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "c.png")
    out = read_gray(tmp_path / "c.png").astype(float)
    assert np.abs(out - _luma(rgb.astype(float))).max() <= 1.0


def test_16bit_png_is_scaled_by_its_depth_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535], [1000, 20000, 40000, 60000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d16.png")  # I;16 gray PNG
    with Image.open(tmp_path / "d16.png") as image:
        assert image.mode.startswith("I")
    out = read_gray(tmp_path / "d16.png")
    assert out.dtype == np.uint8
    assert out.tolist() == np.round(values / 65535 * 255).astype(int).tolist()
    assert out[0].tolist() == [0, 1, 128, 255]  # clipping would have given 0, 255, 255, 255


def test_jpeg_gray_and_colour(tmp_path):
    smooth = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(smooth, mode="L").save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.repeat(smooth[..., None], 3, 2), mode="RGB").save(tmp_path / "c.jpeg",
                                                                         quality=95)
    for name in ("g.jpg", "c.jpeg"):
        out = read_gray(tmp_path / name)
        assert out.shape == (32, 32) and np.abs(out.astype(int) - smooth).max() <= 4, name


def test_unreadable_file_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        read_gray(tmp_path / "broken.png")
    with pytest.raises(ValueError, match="missing.png"):
        read_gray(tmp_path / "missing.png")


# ---- the prepared store ---------------------------------------------------------------------
def _films(folder, count: int = 7, size: int = 40) -> tuple[list, list[str], list]:
    paths, names, arrays = [], [], []
    for i in range(count):
        gray = RNG.integers(0, 256, (size + i, size), dtype=np.uint8)  # sizes differ
        name = f"{i + 1:08d}_000.png"
        Image.fromarray(gray, mode="L").save(folder / name)
        paths.append(folder / name)
        names.append(name)
        arrays.append(gray)
    return paths, names, arrays


def test_store_round_trip(tmp_path):
    paths, names, arrays = _films(tmp_path)
    messages: list[str] = []
    info = prepare_store(paths, names, 16, tmp_path / "store", progress=messages.append)
    assert info["count"] == 7 and info["image_size"] == 16
    store = open_store(tmp_path / "store", image_size=16, verify=True)
    assert store.images.shape == (7, 16, 16) and store.images.dtype == np.uint8
    for i, gray in enumerate(arrays):
        assert (store.images[i] == resize_gray(gray, 16)).all()
    assert store.index["source_width"].tolist() == [40] * 7
    assert store.index["source_height"].tolist() == list(range(40, 47))
    assert store.rows_for([names[3], names[0]]).tolist() == [3, 0]
    assert messages[-1].startswith("prepare: 7/7 images (100%)") and len(messages) <= 10
    with pytest.raises(StoreError, match="99999999_000.png"):
        store.rows_for([names[0], "99999999_000.png"])
    with pytest.raises(StoreError, match="16 px but 32 px"):
        open_store(tmp_path / "store", image_size=32)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_worker_count_does_not_change_the_bytes(tmp_path):
    paths, names, _ = _films(tmp_path, count=23)
    prepare_store(paths, names, 12, tmp_path / "one", processes=1, progress=None)
    prepare_store(paths, names, 12, tmp_path / "four", processes=4, progress=None)
    for name in ("images.npy", "index.csv", "store.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "four" / name).read_bytes()


def test_a_failure_mid_way_leaves_no_readable_store(tmp_path):
    paths, names, _ = _films(tmp_path, count=10)
    calls = []

    def failing(path):
        calls.append(path)
        if len(calls) == 6:
            raise KeyboardInterrupt  # a kill, as far as Python can see one
        return read_gray(path)

    with pytest.raises(KeyboardInterrupt):
        prepare_store(paths, names, 8, tmp_path / "store", progress=None, decode=failing)
    assert not (tmp_path / "store").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
    with pytest.raises(StoreError, match="no store.json"):
        open_store(tmp_path / "store")
    # A hard kill leaves a temp dir (no cleanup ran): still never opened as a store; the
    # next run removes it, and a failing rerun keeps the previous complete store.
    prepare_store(paths, names, 8, tmp_path / "store", progress=None)
    before = (tmp_path / "store" / "images.npy").read_bytes()
    calls.clear()
    (tmp_path / ".tmp-prepare-store-leftover").mkdir()
    with pytest.raises(KeyboardInterrupt):
        prepare_store(paths, names, 8, tmp_path / "store", progress=None, decode=failing)
    assert (tmp_path / "store" / "images.npy").read_bytes() == before
    assert open_store(tmp_path / "store", verify=True).manifest["count"] == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_a_truncated_or_tampered_store_is_refused(tmp_path):
    paths, names, _ = _films(tmp_path, count=4)
    prepare_store(paths, names, 8, tmp_path / "store", progress=None)
    (tmp_path / "store" / "index.csv").write_text("Image Index,row,source_width,"
                                                  "source_height\n")
    with pytest.raises(StoreError, match="checksum"):
        open_store(tmp_path / "store")
    (tmp_path / "store" / "images.npy").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        open_store(tmp_path / "store")


def test_bad_arguments_are_named(tmp_path):
    paths, names, _ = _films(tmp_path, count=2)
    with pytest.raises(ValueError, match="given twice"):
        prepare_store(paths, [names[0]] * 2, 8, tmp_path / "s", progress=None)
    with pytest.raises(ValueError, match="2 paths but 1 names"):
        prepare_store(paths, names[:1], 8, tmp_path / "s", progress=None)
    with pytest.raises(ValueError, match="image_size"):
        prepare_store(paths, names, 0, tmp_path / "s", progress=None)


def test_pil_resize_matches_the_tf_pipeline_within_a_grey_level_or_two():
    tf = pytest.importorskip("tensorflow")
    ys, xs = np.mgrid[0:1024, 0:1024] / 1024
    film = np.clip(120 + 60 * np.sin(6 * xs) * np.cos(4 * ys)
                   + np.random.default_rng(1).normal(0, 12, (1024, 1024)), 0, 255)
    film = film.astype(np.uint8)
    ours = resize_gray(film, 224).astype(int)
    theirs = tf.image.resize(film[..., None], (224, 224), antialias=True).numpy()[..., 0]
    theirs = np.clip(np.round(theirs), 0, 255).astype(int)
    difference = np.abs(ours - theirs)
    assert difference.mean() < 0.6 and difference.max() <= 3
