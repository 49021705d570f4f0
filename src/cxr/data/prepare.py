"""Image files -> pixels: header sizes, one gray decoder, and the prepared uint8 image store."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
from PIL import Image


def read_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (PIL does not decode the pixels).

    This is the size lesion boxes are drawn in (NIH: 1024 x 1024), not NIH's
    ``OriginalImage[Width,Height]`` (the scanned film's size).
    """
    try:
        with Image.open(path) as image:
            return tuple(int(v) for v in image.size)  # type: ignore[return-value]
    except (OSError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot read the image header ({error})") from error


def read_sizes(names: Iterable[str], paths: Iterable) -> pd.DataFrame:
    """``Image Index``, ``width``, ``height`` of each file (for ``select_boxes``)."""
    names, paths = list(names), list(paths)
    if len(names) != len(paths):
        raise ValueError(f"read_sizes: {len(names)} names but {len(paths)} paths")
    sizes = np.array([read_size(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame({"Image Index": names, "width": sizes[:, 0], "height": sizes[:, 1]})
