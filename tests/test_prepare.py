"""The one gray decoder and the prepared image store."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr.data.prepare import read_gray, read_size

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
