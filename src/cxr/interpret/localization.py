"""Does a heatmap point at the lesion? Boxes on the model's input, pointing game, IoU, summary.

numpy and pandas only (no TensorFlow): the localize stage and the tests score heatmaps with it,
and :func:`select_boxes` picks the boxes the stage scores.

Geometry. A box is ``(x, y, w, h)`` in pixels with the origin at the image's top-left corner;
pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``, so its centre is
``(col + 0.5, row + 0.5)``. A pixel belongs to a box when its centre lies inside the box
(half-open, ``x <= cx < x + w``); a box too thin to hold any centre still holds the pixel that
contains its own centre, so every box has at least one pixel.

Frames. A box file's coordinates are in a declared *frame* (``data.bbox_frame``; NIH: the
pixels of its published 1024 x 1024 PNGs, every box within 1024 x 1024), whatever size the
image files on disk have: a user's 512 or 64 px copy of the download keeps its boxes in the
1024 frame. :func:`check_frame` refuses a box outside its frame and an image file whose aspect
does not fit the frame (a crop, or another data set's boxes), naming the CSV row; nothing is
clipped. :func:`map_box` then maps frame pixels onto the model's input, which the pipeline
squashes to a square without keeping the aspect ratio (``cxr.data.prepare.resize_gray``), so x
and y scale independently. Neither the file's own size nor NIH's
``OriginalImage[Width,Height]`` (the scanned film's size, 2500 x 2048, ...) is the frame.

Scores, one heatmap and one box at a time:

* pointing game (Zhang et al. 2016): a hit when the heatmap's maximum lies in the box. Tied
  maxima go to the one nearest the image centre (then the first in row-major order). Ties are
  plateaus: beyond the outermost unit of a Grad-CAM grid the map holds the edge unit's value
  (as an image resize does), and "the first maximum" would put the peak of an edge unit in
  the image's corner, up to half a receptive field away from the unit that holds it; the tied
  pixel nearest the centre is that unit's own centre. A map without a peak (maximum equal to
  minimum; in particular the all-zero map Grad-CAM returns when nothing speaks *for* the
  finding) is a miss: it points nowhere.
* IoU: the heatmap is binarised at ``threshold`` times its own maximum (Grad-CAM maps are
  normalised to a maximum of 1, so this is the absolute threshold on their 0-1 scale; pass
  ``relative=False`` for an absolute threshold on any map), then compared with the box's
  pixel mask. A map without positive values has an empty mask: IoU 0.

The *chance* level of the pointing game is the box's share of the image: a peak placed
uniformly at random hits with that probability. Large boxes (an enlarged heart, both
hyperinflated lungs) are easy targets, so every summary carries it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from cxr.labels import LABELS
from cxr.validation import check_fraction, check_int

Box = tuple[float, float, float, float]


def _size_pair(value, name: str) -> tuple[float, float]:
    """An int/float side (square) or a (width, height) pair, each positive and finite."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive size or a (width, height) pair; got {value!r}.")
    pair = (value, value) if isinstance(value, int | float | np.number) else tuple(value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be a positive size or a (width, height) pair; got {value!r}.")
    width, height = (float(v) for v in pair)
    if not (math.isfinite(width) and math.isfinite(height) and width > 0 and height > 0):
        raise ValueError(f"{name} must be positive and finite; got {value!r}.")
    return width, height


def _check_box(box, name: str = "box") -> Box:
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be four finite numbers (x, y, w, h); got {box!r}.")
    if values[2] <= 0 or values[3] <= 0:
        raise ValueError(f"{name} must have a positive width and height; got {box!r}.")
    return values  # type: ignore[return-value]


def map_box(box_xywh: Sequence[float], frame, input_size) -> Box:
    """A box in its frame's pixels -> the same box on the model's input.

    Args:
        box_xywh: ``(x, y, w, h)`` in pixels of the box file's frame (NIH: 1024 x 1024).
        frame: the frame's ``(width, height)``, or one number for a square frame.
        input_size: the model's input side (the pipeline resizes to a square), or a
            ``(width, height)`` pair.

    x and w scale by ``input_width / frame_width``, y and h by
    ``input_height / frame_height``: the pipeline squashes, it does not letterbox.
    """
    x, y, w, h = _check_box(box_xywh, "box_xywh")
    frame_w, frame_h = _size_pair(frame, "frame")
    input_w, input_h = _size_pair(input_size, "input_size")
    scale_x, scale_y = input_w / frame_w, input_h / frame_h
    return (x * scale_x, y * scale_y, w * scale_x, h * scale_y)


class BoxFrameError(ValueError):
    """A box outside its declared frame, or an image file that does not fit the frame."""


# An image file fits the frame when its aspect is the frame's to 1%: a resized copy keeps the
# aspect to within a pixel of rounding, a crop or another data set's film does not.
ASPECT_TOLERANCE = 0.01


def _first_row(boxes: pd.DataFrame, mask: np.ndarray):
    """(box file line, row) of the first box where ``mask`` holds."""
    at = int(np.flatnonzero(mask)[0])
    return boxes.index[at], boxes.iloc[at]


def check_frame(boxes: pd.DataFrame, frame, source: str = "box file") -> None:
    """Refuse boxes that do not lie in ``frame`` and image files that do not fit it.

    Args:
        boxes: Image Index, x, y, w, h, indexed by the box file's line (``read_bbox_list``);
            with columns ``width`` and ``height`` (each image file's own size, as
            :func:`select_boxes` appends them) the files' aspects are checked too.
        frame: the frame's ``(width, height)`` (``data.bbox_frame``), or one number.
        source: the box file's name, for the message.

    Raises BoxFrameError naming the file, the CSV row, the box and the frame.
    """
    frame_w, frame_h = _size_pair(frame, "frame")
    x, y = boxes["x"].to_numpy(float), boxes["y"].to_numpy(float)
    right, bottom = x + boxes["w"].to_numpy(float), y + boxes["h"].to_numpy(float)
    outside = (x < 0) | (y < 0) | (right > frame_w) | (bottom > frame_h)
    if outside.any():
        line, row = _first_row(boxes, outside)
        raise BoxFrameError(
            f"{source}, row {line}: box (x {row['x']:g}, y {row['y']:g}, w "
            f"{row['w']:g}, h {row['h']:g}) of {row['Image Index']} reaches beyond the frame "
            f"{frame_w:g} x {frame_h:g} (data.bbox_frame); expected every box inside the frame "
            f"its coordinates are written in, {int(outside.sum())} of {len(boxes)} boxes are not")
    if not set(SIZE_COLUMNS) <= set(boxes.columns):
        return
    aspect = boxes["width"].to_numpy(float) / boxes["height"].to_numpy(float)
    misfit = np.abs(aspect / (frame_w / frame_h) - 1) > ASPECT_TOLERANCE
    if misfit.any():
        line, row = _first_row(boxes, misfit)
        raise BoxFrameError(
            f"{source}, row {line}: image {row['Image Index']} is "
            f"{int(row['width'])} x {int(row['height'])} px, whose aspect does not fit the "
            f"boxes' frame {frame_w:g} x {frame_h:g} (data.bbox_frame); expected the file to be "
            f"the frame's image or a resized copy of it")


def _check_heatmap(heatmap) -> np.ndarray:
    heatmap = np.asarray(heatmap)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array (height, width); got shape "
                         f"{heatmap.shape}.")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap holds NaN or infinite values.")
    return heatmap


def box_mask(box: Sequence[float], shape: tuple[int, int], tolerance: float = 0.0) -> np.ndarray:
    """(height, width) bool mask of the pixels whose centre lies in ``box`` (see module doc).

    ``tolerance`` widens the box by that many pixels on every side (the pointing game of Zhang
    et al. allows 15 px at their scale); the mask is clipped to the image.
    """
    x, y, w, h = _check_box(box)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 pixels; got {tolerance!r}.")
    x, y, w, h = x - tolerance, y - tolerance, w + 2 * tolerance, h + 2 * tolerance
    height, width = shape
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    in_x = (cols >= x) & (cols < x + w)
    in_y = (rows >= y) & (rows < y + h)
    if not in_x.any():  # thinner than a pixel: keep the column holding its centre
        in_x[int(np.clip(math.floor(x + w / 2), 0, width - 1))] = True
    if not in_y.any():
        in_y[int(np.clip(math.floor(y + h / 2), 0, height - 1))] = True
    return in_y[:, None] & in_x[None, :]


def peak(heatmap) -> tuple[int, int] | None:
    """``(row, col)`` of the maximum, or None for a map without a peak (all values equal).

    Tied maxima: the one nearest the image centre, then the first in row-major order.
    """
    heatmap = _check_heatmap(heatmap)
    top = heatmap.max()
    if top <= heatmap.min():
        return None
    rows, cols = np.nonzero(heatmap == top)
    height, width = heatmap.shape
    distance = (rows + 0.5 - height / 2) ** 2 + (cols + 0.5 - width / 2) ** 2
    nearest = int(np.argmin(distance))  # np.nonzero is row-major: argmin keeps the first
    return int(rows[nearest]), int(cols[nearest])


def pointing_hit(heatmap, box: Sequence[float], tolerance: float = 0.0) -> bool:
    """True when the heatmap's peak pixel lies in ``box`` (pixels of the heatmap).

    A map without a peak (all values equal, e.g. all zero) is a miss.
    """
    heatmap = _check_heatmap(heatmap)
    location = peak(heatmap)
    if location is None:
        return False
    return bool(box_mask(box, heatmap.shape, tolerance)[location])


def heatmap_iou(heatmap, box: Sequence[float], threshold: float = 0.5,
                relative: bool = True) -> float:
    """IoU of the heatmap's pixels ``>= threshold`` (times its max when ``relative``) and the box.

    A map whose maximum is not positive selects no pixel: IoU 0.
    """
    heatmap = _check_heatmap(heatmap)
    if relative:
        check_fraction(threshold, "threshold (relative=True)", include_boundaries="right",
                       type_error=ValueError)
    top = float(heatmap.max())
    if top <= 0:
        return 0.0
    level = threshold * top if relative else threshold
    selected = heatmap >= level
    target = box_mask(box, heatmap.shape)
    union = int((selected | target).sum())
    return float((selected & target).sum() / union) if union else 0.0


def box_fraction(box: Sequence[float], shape: tuple[int, int]) -> float:
    """The box's share of the image's pixels: the pointing game's chance level."""
    mask = box_mask(box, shape)
    return float(mask.sum() / mask.size)


def score(heatmap, box: Sequence[float], threshold: float = 0.5, tolerance: float = 0.0) -> dict:
    """One record for :func:`localization_summary`: hit, iou, chance and flat (no peak)."""
    heatmap = _check_heatmap(heatmap)
    return {"hit": pointing_hit(heatmap, box, tolerance),
            "iou": heatmap_iou(heatmap, box, threshold),
            "chance": box_fraction(box, heatmap.shape),
            "flat": peak(heatmap) is None}


def _aggregate(records: list[Mapping]) -> dict:
    n = len(records)
    if n == 0:
        return {"n": 0, "pointing": None, "iou_mean": None, "chance": None, "flat": 0}
    return {
        "n": n,
        "pointing": float(np.mean([bool(r["hit"]) for r in records])),
        "iou_mean": float(np.mean([float(r["iou"]) for r in records])),
        "chance": (float(np.mean([float(r["chance"]) for r in records]))
                   if all(r.get("chance") is not None for r in records) else None),
        "flat": int(sum(bool(r.get("flat", False)) for r in records)),
    }


def localization_summary(records: Iterable[Mapping], labels: Sequence[str] = LABELS) -> dict:
    """Pointing-game accuracy and mean IoU per finding and overall.

    Args:
        records: one mapping per scored box with ``finding`` (a name from ``labels``),
            ``hit`` (bool), ``iou`` (float) and optionally ``chance`` (the box's share of the
            image) and ``flat`` (the heatmap had no peak); :func:`score` returns the last four.
        labels: the findings reported, in order (default: the 14 in canonical order).

    Returns:
        ``{"per_finding": {finding: {"n", "pointing", "iou_mean", "chance", "flat"}},
        "overall": {... the same over all boxes pooled ..., "pointing_macro", "iou_macro"}}``.
        A finding without boxes has ``n`` 0 and None for every rate. ``pointing_macro`` and
        ``iou_macro`` average the findings that have boxes, each finding counting once.
    """
    records = list(records)
    by_finding: dict[str, list[Mapping]] = {label: [] for label in labels}
    for index, record in enumerate(records):
        missing = [key for key in ("finding", "hit", "iou") if key not in record]
        if missing:
            raise ValueError(f"records[{index}] lacks {missing}; expected keys finding, hit, iou.")
        finding = record["finding"]
        if finding not in by_finding:
            raise ValueError(f"records[{index}]: finding {finding!r} is not one of "
                             f"{', '.join(labels)}.")
        by_finding[finding].append(record)
    per_finding = {label: _aggregate(rows) for label, rows in by_finding.items()}
    overall = _aggregate(records)
    scored = [entry for entry in per_finding.values() if entry["n"]]
    overall["pointing_macro"] = (float(np.mean([e["pointing"] for e in scored]))
                                 if scored else None)
    overall["iou_macro"] = float(np.mean([e["iou_mean"] for e in scored])) if scored else None
    return {"per_finding": per_finding, "overall": overall}


SIZE_COLUMNS = ("width", "height")


def select_boxes(boxes: pd.DataFrame, images: Iterable[str], image_sizes: pd.DataFrame,
                 max_images: int, seed: int) -> pd.DataFrame:
    """The boxes to score: those of at most ``max_images`` of ``images``, drawn by ``seed``.

    Args:
        boxes: ``cxr.data.nih.read_bbox_list`` output (Image Index, Finding Label, x, y, w, h).
        images: the image names eligible (the test split).
        image_sizes: ``Image Index``, ``width``, ``height``: the size in pixels of each image
            file (the prepared store's index), for at least the chosen images; kept so that
            :func:`check_frame` can check each file fits the boxes' frame.
        max_images: cap on the images scored; when more are eligible, a seeded draw without
            replacement picks them (the same for every model).
        seed: seed of that draw.

    Returns:
        The chosen boxes sorted by image name then file order, with the file's size appended
        as columns ``width`` and ``height``; indexed by the box file's line.
    """
    check_int(max_images, "max_images", min_val=1, type_error=ValueError)
    absent = [c for c in ("Image Index", *SIZE_COLUMNS) if c not in image_sizes.columns]
    if absent:
        raise ValueError(f"image_sizes lacks column(s) {absent}; expected Image Index, width, "
                         f"height (the image file's pixels).")
    eligible = boxes[boxes["Image Index"].isin(set(images))]
    names = np.array(sorted(eligible["Image Index"].unique()), dtype=object)
    if len(names) > max_images:
        chosen = np.random.default_rng(seed).choice(len(names), max_images, replace=False)
        names = names[np.sort(chosen)]
    chosen_boxes = eligible[eligible["Image Index"].isin(set(names))]
    chosen_boxes = chosen_boxes.sort_values("Image Index", kind="mergesort")
    sizes = image_sizes.drop_duplicates("Image Index").set_index("Image Index")
    missing = sorted(set(names) - set(sizes.index))
    if missing:
        raise ValueError(f"no image size for {len(missing)} image(s) with a box, e.g. "
                         f"{missing[0]!r}: image_sizes must hold every boxed image.")
    found = sizes.loc[chosen_boxes["Image Index"], list(SIZE_COLUMNS)].to_numpy()
    return chosen_boxes.assign(width=found[:, 0], height=found[:, 1])


def localization_log_metrics(result: Mapping) -> dict:
    """The scalars of a localize result (its ``overall`` and ``per_finding`` summaries, as
    :func:`localization_summary` makes them) that go to MLflow; None where nothing was
    scored."""
    overall = result["overall"]
    n = overall["n"]
    metrics = {"pointing_game": overall["pointing"], "pointing_chance": overall["chance"],
               "iou_mean": overall["iou_mean"], "pointing_macro": overall.get("pointing_macro"),
               "iou_macro": overall.get("iou_macro"), "boxes_scored": n,
               "flat_heatmaps": overall["flat"] / n if n else None,
               "seconds_per_heatmap": result.get("seconds_per_heatmap")}
    for finding, entry in result.get("per_finding", {}).items():
        metrics[f"pointing_{finding}"] = entry["pointing"]
        metrics[f"iou_{finding}"] = entry["iou_mean"]
    return metrics
