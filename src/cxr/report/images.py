"""Figures made light for embedding in the HTML report (the PNG files themselves are untouched).

The figures are drawn at print resolution, and the Grad-CAM grids are photographs: embedded as
they are, four grids alone weigh 6 MB of base64. Each figure is scaled to at most
:data:`MAX_WIDTH` pixels (wider than that, the page shows it shrunk anyway) and written as WebP,
in the lighter of two forms:

- lossless, on an adaptive palette of :data:`PALETTE_COLORS` colours: line charts and bar charts
  stay sharp (text, thin lines), and their few flat colours compress well;
- lossy at :data:`LOSSY_QUALITY` for a photograph-like figure (X-rays under a heatmap): one
  with more than :data:`PHOTO_COLORS` distinct colours before scaling. Quantising it to a
  palette is lossy too (banding) and, at 64 px phantoms under smooth heatmaps, can still come
  out smaller than half the lossy size, which once put 1.2 MB of Grad-CAM grids in the report
  losslessly. The charts drawn here have at most ~6,200 colours, the Grad-CAM grids 31,000 or
  more;
- otherwise lossy only when it is under half the lossless size (a chart never is).

The original bytes win when they are already smaller and no wider than the limit. The reasons
(and the sizes measured) are in docs/DESIGN.md, "A light report".
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

MAX_WIDTH = 900
PALETTE_COLORS = 64
LOSSY_QUALITY = 75
LOSSY_GAIN = 2.0  # lossy must be this many times smaller than lossless to be chosen
PHOTO_COLORS = 16_384  # more distinct colours than this: photograph-like, always lossy


def _mime(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _flatten(image: Image.Image) -> Image.Image:
    """RGB on a white background (the page is white; matplotlib writes RGBA)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _encode(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", method=4, **options)
    return buffer.getvalue()


def compact_figure(data: bytes, max_width: int = MAX_WIDTH) -> tuple[str, bytes] | None:
    """(mime type, bytes) of the lightest faithful form of an image; None if not an image."""
    if max_width < 1:
        raise ValueError(f"max_width must be a positive number of pixels, got {max_width!r}")
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = _flatten(opened)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    original_width = image.width
    photo_like = image.getcolors(maxcolors=PHOTO_COLORS) is None  # None: more colours
    if image.width > max_width:
        height = max(1, round(image.height * max_width / image.width))
        image = image.resize((max_width, height), Image.Resampling.LANCZOS)
    lossy = _encode(image, quality=LOSSY_QUALITY)
    if photo_like:
        best = lossy
    else:
        palette = image.quantize(PALETTE_COLORS, method=Image.Quantize.MEDIANCUT,
                                 dither=Image.Dither.NONE)
        lossless = _encode(palette, lossless=True)
        best = lossy if len(lossy) * LOSSY_GAIN < len(lossless) else lossless
    original_mime = _mime(data)
    if original_mime is not None and image.width == original_width and len(data) <= len(best):
        return original_mime, data
    return "image/webp", best
