"""Image files -> pixels: header sizes, one gray decoder, and the prepared uint8 image store.

:func:`read_gray` is the one decoder for every image file the project reads outside tf.data:
NIH's PNGs are 8-bit gray, but copies pass through tools that save them as RGB, RGBA, 16-bit
or JPEG, and each must become the same one-channel 8-bit image.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
import pandas as pd
from PIL import Image

# PIL modes of 16-bit gray PNGs (Pillow >= 10 opens them as I;16, older versions as I).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def read_gray(path) -> np.ndarray:
    """Any PNG/JPEG -> a 2-D uint8 array (height, width): one 8-bit gray channel.

    * 8-bit gray (``L``): as stored.
    * gray + alpha (``LA``), RGBA, palette with transparency: the alpha channel is dropped
      (not composited: NIH films are opaque, an alpha channel is an export artefact).
    * RGB / palette / CMYK JPEG: ITU-R 601-2 luminance ``0.299 R + 0.587 G + 0.114 B`` (PIL's
      ``convert("L")``; ``tf.image.rgb_to_grayscale`` uses the same weights).
    * 16-bit gray: scaled by the full 16-bit range, ``round(v * 255 / 65535)``, never clipped
      (clipping would turn most of a 16-bit film white). A 32-bit integer image (``I``, how
      older Pillow opens 16-bit PNGs) is treated as 16-bit and must hold values <= 65535.
    * 1-bit: 0 / 255.

    Raises ValueError naming the file when it cannot be read or has an unsupported mode.
    """
    where = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _to_gray(image, where)
    except (OSError, SyntaxError) as error:  # PIL raises SyntaxError for some broken files
        raise ValueError(f"{where}: cannot decode the image ({error})") from error


def _to_gray(image: Image.Image, where: str) -> np.ndarray:
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{where}: {mode} image holds values outside 0..65535 "
                             f"({values.min()}..{values.max()}); expected a 16-bit image")
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel("L"), dtype=np.uint8).copy()
    if mode in ("RGBA", "RGBa", "RGBX"):
        image = image.convert("RGB")
        mode = "RGB"
    if mode in ("RGB", "CMYK", "YCbCr", "1"):
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    raise ValueError(f"{where}: unsupported image mode {mode!r}; expected 8/16-bit gray, "
                     f"gray+alpha, RGB, RGBA, palette or CMYK")


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
