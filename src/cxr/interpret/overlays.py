"""Heatmap overlays as PNG: one image with its Grad-CAM map, or a grid of examples per finding.

Each panel shows the image the model saw (grey), the heatmap over it (jet colour map, a fixed
0-1 scale, partly transparent; left out for a flat all-zero map, which has nothing to show),
the lesion box when known (white outline) and the heatmap's peak (a cross, the point the
pointing game scores). Pure matplotlib on an Agg canvas, like
:mod:`cxr.report.plots`: no pyplot state, no display, no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from cxr.interpret.localization import peak
from cxr.report.plots import DPI

HEATMAP_ALPHA = 0.45
BOX_COLOR = "white"
PEAK_COLOR = "#00ff66"


def _grey(image) -> np.ndarray:
    """(H, W) float 0-255 from a (H, W), (H, W, 1) or (H, W, 3) image (first channel)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[..., 0]
    if image.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, channels); got shape {image.shape}.")
    return image


def draw_overlay(axes, image, heatmap, box: Sequence[float] | None = None,
                 alpha: float = HEATMAP_ALPHA) -> None:
    """Image, heatmap, box and peak on one matplotlib Axes (pixel coordinates of the image).

    The heatmap must have the image's height and width; ``box`` is ``(x, y, w, h)`` in the
    same pixels.
    """
    grey = _grey(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != grey.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the image's {grey.shape}.")
    height, width = grey.shape
    extent = (0, width, height, 0)  # pixel (r, c) covers [c, c+1) x [r, r+1)
    axes.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="bilinear")
    if heatmap.max() > 0:
        axes.imshow(heatmap, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha, extent=extent,
                    interpolation="bilinear")
    if box is not None:
        x, y, w, h = (float(v) for v in box)
        axes.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=BOX_COLOR, linewidth=1.5))
    location = peak(heatmap)
    if location is not None:
        axes.plot(location[1] + 0.5, location[0] + 0.5, marker="x", color=PEAK_COLOR,
                  markersize=7, markeredgewidth=2)
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.set_xticks([])
    axes.set_yticks([])


def save_overlay(image, heatmap, title: str, path, box: Sequence[float] | None = None) -> Path:
    """One overlay, titled, as a PNG at ``path`` (folders created)."""
    figure = _new_figure((4.0, 4.4))
    axes = figure.subplots()
    draw_overlay(axes, image, heatmap, box)
    axes.set_title(title, fontsize=10)
    return _save(figure, path)


def examples_grid(examples: Mapping[str, Sequence[Mapping]], title: str, path) -> Path:
    """A row per finding of example overlays, each titled hit/miss and IoU.

    ``examples`` maps a finding to its examples, each a mapping with ``image``, ``heatmap``,
    ``box`` (all on the model's input pixels), ``hit`` (bool), ``iou`` (float) and optionally
    ``name`` (the image's file name). Findings without examples are left out; with none at
    all the figure says so.
    """
    rows = [(finding, list(items)) for finding, items in examples.items() if items]
    if not rows:
        figure = _new_figure((6.0, 1.5))
        figure.text(0.5, 0.5, f"{title}\nNo test image with a box to show.", ha="center",
                    va="center", fontsize=11)
        return _save(figure, path)
    ncols = max(len(items) for _, items in rows)
    figure = _new_figure((1.9 * ncols + 0.6, 2.05 * len(rows) + 0.7))
    grid = figure.subplots(len(rows), ncols, squeeze=False)
    for (finding, items), axes_row in zip(rows, grid, strict=True):
        for column, axes in enumerate(axes_row):
            if column >= len(items):
                axes.set_visible(False)
                continue
            item = items[column]
            draw_overlay(axes, item["image"], item["heatmap"], item.get("box"))
            flat = float(np.max(item["heatmap"])) <= 0
            verdict = "hit" if item.get("hit") else "miss (flat map)" if flat else "miss"
            axes.set_title(f"{verdict}, IoU {float(item.get('iou', 0.0)):.2f}", fontsize=8)
            if item.get("name"):
                axes.set_xlabel(str(item["name"]), fontsize=6.5)
            if column == 0:
                axes.set_ylabel(finding, fontsize=9)
    figure.suptitle(f"{title}\nbox: white; heatmap peak: green cross", fontsize=10)
    return _save(figure, path)


def _new_figure(figsize) -> Figure:
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No "Software" tag: identical inputs give identical bytes (see cxr.report.plots).
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
