"""Overlay PNGs: one image, a grid per finding, flat maps and no examples at all."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxr.interpret.overlays import examples_grid, save_overlay


def _example(seed: int, flat: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    heatmap = np.zeros((32, 32), "float32") if flat else rng.random((32, 32)).astype("float32")
    return {"image": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "heatmap": heatmap,
            "box": (4.0, 6.0, 10.0, 8.0), "hit": not flat, "iou": 0.25, "name": f"{seed}.png"}


def test_single_overlay_and_grid_are_pngs(tmp_path):
    one = _example(0)
    path = save_overlay(one["image"], one["heatmap"], "x.png\nMass: 0.7", tmp_path / "a" / "o.png")
    grid = examples_grid({"Mass": [_example(1), _example(2, flat=True)], "Nodule": [_example(3)],
                          "Hernia": []}, "grid", tmp_path / "grid.png")
    for file in (path, grid):
        with Image.open(file) as image:
            assert image.format == "PNG"
    with Image.open(grid) as image:  # two rows (Hernia has no examples), two columns
        assert image.size[1] > image.size[0] * 0.8


def test_grid_without_examples_says_so(tmp_path):
    path = examples_grid({"Mass": []}, "nothing", tmp_path / "empty.png")
    with Image.open(path) as image:
        assert image.format == "PNG"


def test_heatmap_must_match_the_image(tmp_path):
    with pytest.raises(ValueError, match="differs from the image"):
        save_overlay(np.zeros((32, 32)), np.zeros((16, 16)), "t", tmp_path / "x.png")
