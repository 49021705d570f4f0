"""The scanned film's size and pixel spacing (NIH's ``OriginalImage`` columns), never the PNG's.

NIH resized every film to a 1024 x 1024 PNG; ``OriginalImage[Width,Height]`` and
``OriginalImagePixelSpacing[x,y]`` describe the film before that, and boxes are in the PNG's
pixels. The phantoms imitate this, so code that wrongly maps boxes or pixels by the film's size
fails on phantoms as it would on the real files.

Drawn from their own random stream (``reference._STREAM_FILM``), so adding them moved no label,
anatomy or pixel of the existing phantoms.
"""

from __future__ import annotations

import numpy as np

from cxr.data.phantoms.reference import _STREAM_FILM

# NIH Data_Entry_2017_v2020.csv (112,120 images): the six most common film sizes and their
# counts; the remaining 22,154 films have other sizes.
NIH_FILM_SIZES = ((2500, 2048), (2992, 2991), (3056, 2544), (2048, 2500), (2021, 2021),
                  (2544, 3056))
NIH_FILM_SIZE_COUNTS = (37_153, 21_961, 15_340, 8_683, 4_411, 2_418)
NIH_OTHER_FILM_SIZES = 22_154
# "Other" sizes: width and height drawn independently, uniform between NIH's 5th and 95th
# percentile (width 2021-3056, height 2021-2991); the extreme films (1143 px ... 4715 px) are
# rare and left out.
OTHER_WIDTH_RANGE = (2021, 3056)
OTHER_HEIGHT_RANGE = (2021, 2991)
# OriginalImagePixelSpacing quantiles (0, 5, 50, 95, 100%) in mm; drawn by interpolating this
# inverse CDF linearly, rounded to 3 decimals as NIH writes it, the same value for x and y.
NIH_SPACING_QUANTILES = ((0.0, 0.115), (0.05, 0.139), (0.5, 0.143), (0.95, 0.194), (1.0, 0.199))


def draw_films(seed: int, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes (n, 2) int width/height, spacing (n,) float mm)`` for n images in plan order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_FILM]))
    counts = np.array((*NIH_FILM_SIZE_COUNTS, NIH_OTHER_FILM_SIZES), dtype=float)
    kind = rng.choice(len(counts), size=n_images, p=counts / counts.sum())
    other_w = rng.integers(OTHER_WIDTH_RANGE[0], OTHER_WIDTH_RANGE[1] + 1, size=n_images)
    other_h = rng.integers(OTHER_HEIGHT_RANGE[0], OTHER_HEIGHT_RANGE[1] + 1, size=n_images)
    table = np.array(NIH_FILM_SIZES + ((0, 0),), dtype=np.int64)
    sizes = table[kind]
    other = kind == len(NIH_FILM_SIZES)
    sizes[other] = np.stack([other_w[other], other_h[other]], axis=1)
    levels, values = zip(*NIH_SPACING_QUANTILES, strict=True)
    spacing = np.round(np.interp(rng.random(n_images), levels, values), 3)
    return sizes, spacing
