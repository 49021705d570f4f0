"""Boxes on rescaled images, pointing game, IoU, summaries, and NIH's box file with its quirks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr.data.nih import read_bbox_list, read_data_entry
from cxr.data.prepare import open_store, prepare_store, read_sizes
from cxr.interpret.localization import (
    BoxFrameError,
    box_fraction,
    box_mask,
    check_frame,
    heatmap_iou,
    localization_summary,
    map_box,
    peak,
    pointing_hit,
    score,
    select_boxes,
)
from cxr.labels import LABELS

# The published file's layout: "Bbox [x,y,w,h]" split over four fields, three trailing empty
# header fields, every row padded with ",,,", Infiltration spelled "Infiltrate".
NIH_BBOX = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00013118_008.png,Atelectasis,225.084745762712,547.019216763771,86.7796610169491,79.1864406779661,,,
00014716_007.png,Infiltrate,686.067796610169,272.542372881356,195.254237288136,263.593220338983,,,
00029817_009.png,Pneumothorax,107.301587301587,163.301587301587,262.095238095238,397.206349206349,,,
00014716_007.png,Nodule,512,256,64,32,,,
"""


def test_box_mapping_scales_x_and_y_independently():
    # 1024 x 800 original squashed to 64 x 64: x scales by 1/16, y by 0.08.
    assert map_box((512, 400, 128, 80), (1024, 800), 64) == pytest.approx((32, 32, 8, 6.4))
    assert map_box((0, 0, 1024, 800), (1024, 800), 64) == pytest.approx((0, 0, 64, 64))
    assert map_box((10, 20, 30, 40), 100, (50, 25)) == pytest.approx((5, 5, 15, 10))
    # the mapped box covers the same share of the image
    mapped = map_box((100, 200, 300, 160), (1024, 800), 64)
    assert box_fraction(mapped, (64, 64)) == pytest.approx(300 * 160 / (1024 * 800), rel=0.1)


@pytest.mark.parametrize(("box", "original", "size", "match"), [
    ((0, 0, 0, 5), (10, 10), 8, "positive width"),
    ((0, 0, np.nan, 5), (10, 10), 8, "finite"),
    ((0, 0, 1), (10, 10), 8, "four finite numbers"),
    ((0, 0, 1, 1), (0, 10), 8, "frame"),
    ((0, 0, 1, 1), (10, 10), (8, 8, 8), "input_size"),
])
def test_box_mapping_rejects_bad_input(box, original, size, match):
    with pytest.raises(ValueError, match=match):
        map_box(box, original, size)


def test_box_mask_uses_pixel_centres_and_keeps_a_thin_box():
    mask = box_mask((1.0, 2.0, 2.0, 1.0), (4, 5))
    assert mask.sum() == 2 and mask[2, 1] and mask[2, 2]
    mask = box_mask((1.6, 2.6, 0.2, 0.2), (4, 5))  # holds no pixel centre
    assert mask.sum() == 1 and mask[2, 1]
    assert box_mask((0, 0, 1, 1), (4, 5), tolerance=1.0).sum() == 4  # clipped at the border


def test_pointing_hits_and_misses_by_hand():
    heatmap = np.zeros((8, 8))
    heatmap[2, 5] = 1.0
    assert pointing_hit(heatmap, (5, 2, 1, 1))  # the peak pixel itself
    assert pointing_hit(heatmap, (4, 1, 3, 3))
    assert not pointing_hit(heatmap, (0, 0, 5, 8))  # x < 5: stops just left of the peak
    assert pointing_hit(heatmap, (0, 0, 5, 8), tolerance=1.0)
    assert not pointing_hit(np.zeros((8, 8)), (0, 0, 8, 8))  # flat: points nowhere
    assert not pointing_hit(np.full((8, 8), 0.3), (0, 0, 8, 8))


def test_tied_maxima_go_to_the_one_nearest_the_centre():
    # A plateau along the left border (a grid's edge unit held beyond its centre): the peak is
    # the plateau's innermost pixel, not the corner.
    heatmap = np.zeros((8, 8))
    heatmap[5, :3] = 1.0
    assert peak(heatmap) == (5, 2)
    heatmap = np.zeros((8, 8))
    heatmap[1, 1] = heatmap[6, 6] = 1.0  # equally far: the first in row-major order
    assert peak(heatmap) == (1, 1)
    assert peak(np.ones((3, 3))) is None


def test_iou_by_hand():
    heatmap = np.zeros((10, 10))
    heatmap[2:4, 2:6] = 1.0  # 8 pixels
    heatmap[2:4, 6:8] = 0.4  # below half the maximum
    assert heatmap_iou(heatmap, (2, 2, 4, 2)) == pytest.approx(1.0)
    assert heatmap_iou(heatmap, (2, 2, 2, 2)) == pytest.approx(4 / 8)
    assert heatmap_iou(heatmap, (2, 2, 6, 2), threshold=0.3) == pytest.approx(1.0)
    assert heatmap_iou(heatmap, (2, 2, 6, 2)) == pytest.approx(8 / 12)
    assert heatmap_iou(heatmap, (8, 8, 2, 2)) == 0.0
    assert heatmap_iou(heatmap * 0.5, (2, 2, 4, 2), threshold=0.5) == pytest.approx(1.0)
    assert heatmap_iou(heatmap * 0.5, (2, 2, 4, 2), threshold=0.6, relative=False) == 0.0
    assert heatmap_iou(np.zeros((10, 10)), (0, 0, 10, 10)) == 0.0  # flat selects nothing
    with pytest.raises(ValueError, match="threshold"):
        heatmap_iou(heatmap, (0, 0, 1, 1), threshold=0)
    with pytest.raises(ValueError, match="2-D"):
        heatmap_iou(np.zeros(5), (0, 0, 1, 1))


def test_summary_per_finding_overall_and_none_without_boxes():
    heatmap = np.zeros((10, 10))
    heatmap[1, 1] = 1.0
    records = [
        {"finding": "Mass", **score(heatmap, (0, 0, 2, 2))},   # hit, IoU 1/4
        {"finding": "Mass", **score(heatmap, (5, 5, 2, 2))},   # miss
        {"finding": "Nodule", **score(np.zeros((10, 10)), (0, 0, 2, 2))},  # flat miss
    ]
    summary = localization_summary(records)
    mass, nodule = summary["per_finding"]["Mass"], summary["per_finding"]["Nodule"]
    assert mass == {"n": 2, "pointing": 0.5, "iou_mean": pytest.approx(0.125),
                    "chance": pytest.approx(0.04), "flat": 0}
    assert nodule["n"] == 1 and nodule["pointing"] == 0.0 and nodule["flat"] == 1
    assert summary["per_finding"]["Hernia"] == {"n": 0, "pointing": None, "iou_mean": None,
                                                "chance": None, "flat": 0}
    assert list(summary["per_finding"]) == list(LABELS)
    overall = summary["overall"]
    assert overall["n"] == 3 and overall["pointing"] == pytest.approx(1 / 3)
    assert overall["pointing_macro"] == pytest.approx(0.25)  # (0.5 + 0.0) / 2 findings
    assert overall["flat"] == 1
    empty = localization_summary([])
    assert empty["overall"]["pointing"] is None and empty["overall"]["pointing_macro"] is None
    with pytest.raises(ValueError, match="finding 'Flu'"):
        localization_summary([{"finding": "Flu", "hit": True, "iou": 1.0}])


def test_nih_box_file_with_its_quirks_parses_and_maps(tmp_path):
    path = tmp_path / "BBox_List_2017.csv"
    path.write_text(NIH_BBOX)
    boxes = read_bbox_list(path)
    assert list(boxes.columns) == ["Image Index", "Finding Label", "x", "y", "w", "h"]
    assert boxes["Finding Label"].tolist() == ["Atelectasis", "Infiltration", "Pneumothorax",
                                               "Nodule"]
    first = boxes.iloc[0]
    mapped = map_box((first["x"], first["y"], first["w"], first["h"]), (1024, 1024), 224)
    assert mapped == pytest.approx((49.2373, 119.6605, 18.9830, 17.3220), abs=1e-3)

    # Sizes are the PNG files' own (all 1024 px in NIH), never OriginalImage (the film's size).
    sizes = pd.DataFrame({"Image Index": ["00013118_008.png", "00014716_007.png",
                                          "00029817_009.png"],
                          "width": [1024, 1024, 1024], "height": [1024, 1024, 1024]})
    test_images = ["00014716_007.png", "00013118_008.png", "99999999_000.png"]
    chosen = select_boxes(boxes, test_images, sizes, max_images=10, seed=0)
    assert chosen["Image Index"].tolist() == ["00013118_008.png", "00014716_007.png",
                                              "00014716_007.png"]  # by name, then file order
    assert chosen["Finding Label"].tolist() == ["Atelectasis", "Infiltration", "Nodule"]
    assert chosen[["width", "height"]].to_numpy().tolist() == [[1024, 1024]] * 3
    nodule = chosen.iloc[2]
    assert map_box(nodule[["x", "y", "w", "h"]], 1024, 64) == pytest.approx((32, 16, 4, 2))
    assert chosen.index.tolist() == [2, 3, 5]  # the box file's lines, for error messages
    with pytest.raises(ValueError, match="lacks column"):
        select_boxes(boxes, test_images, sizes.rename(columns={"width": "OriginalImage Width"}),
                     max_images=10, seed=0)


def test_nih_like_box_lands_where_drawn_whatever_the_film_size(tmp_path):
    """A 1024 px PNG of a 2500 x 2048 film: the box is in PNG pixels and maps by 1024."""
    image = np.zeros((1024, 1024), np.uint8)
    image[256:512, 640:768] = 255  # the lesion: x 640..768, y 256..512 in PNG pixels
    name = "00000001_000.png"
    Image.fromarray(image).save(tmp_path / name)
    entry = tmp_path / "Data_Entry_2017.csv"
    entry.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,"
                     "Patient Gender,View Position,OriginalImage[Width,Height],"
                     "OriginalImagePixelSpacing[x,y]\n"
                     f"{name},Mass,0,1,58,M,PA,2500,2048,0.143,0.143\n")
    (tmp_path / "BBox_List_2017.csv").write_text(
        f"Image Index,Finding Label,Bbox [x,y,w,h],,,\n{name},Mass,640,256,128,256,,,\n")
    boxes = read_bbox_list(tmp_path / "BBox_List_2017.csv")
    film = read_data_entry(entry).iloc[0]
    assert (film["OriginalImage Width"], film["OriginalImage Height"]) == (2500, 2048)
    sizes = read_sizes([name], [tmp_path / name])
    assert sizes[["width", "height"]].to_numpy().tolist() == [[1024, 1024]]
    box = select_boxes(boxes, [name], sizes, max_images=5, seed=0).iloc[0]
    mapped = map_box(box[["x", "y", "w", "h"]], 1024, 64)
    assert mapped == pytest.approx((40, 16, 8, 16))
    # The lesion's pixels on a 64 px input (block average of the 1024 px image, 16 px per pixel)
    small = image.reshape(64, 16, 64, 16).mean(axis=(1, 3))
    assert (box_mask(mapped, (64, 64)) == (small > 0)).all()
    # The old mapping by OriginalImage put it far off, towards the top-left.
    wrong = map_box(box[["x", "y", "w", "h"]], (2500, 2048), 64)
    assert not box_mask(wrong, (64, 64))[small > 0].any()


def test_select_boxes_caps_images_deterministically():
    boxes = pd.DataFrame({"Image Index": [f"{i:08d}_000.png" for i in range(20)] * 2,
                          "Finding Label": ["Mass"] * 20 + ["Nodule"] * 20,
                          "x": 1.0, "y": 1.0, "w": 2.0, "h": 2.0})
    sizes = pd.DataFrame({"Image Index": boxes["Image Index"].unique(), "width": 64,
                          "height": 64})
    images = boxes["Image Index"].unique()
    first = select_boxes(boxes, images, sizes, max_images=5, seed=3)
    again = select_boxes(boxes, images, sizes, max_images=5, seed=3)
    pd.testing.assert_frame_equal(first, again)
    assert first["Image Index"].nunique() == 5 and len(first) == 10  # both boxes per image
    other = select_boxes(boxes, images, sizes, max_images=5, seed=4)
    assert set(other["Image Index"]) != set(first["Image Index"])
    with pytest.raises(ValueError, match="no image size"):
        select_boxes(boxes, images, sizes.iloc[:3], max_images=50, seed=0)


def test_log_metrics_carry_overall_and_per_finding_scores():
    from cxr.interpret.localization import localization_log_metrics

    records = [{"finding": "Mass", "hit": True, "iou": 0.5, "chance": 0.1, "flat": False},
               {"finding": "Mass", "hit": False, "iou": 0.0, "chance": 0.1, "flat": True},
               {"finding": "Nodule", "hit": True, "iou": 0.25, "chance": 0.05, "flat": False}]
    metrics = localization_log_metrics({**localization_summary(records),
                                        "seconds_per_heatmap": 0.01})
    assert metrics["pointing_game"] == pytest.approx(2 / 3)
    assert metrics["flat_heatmaps"] == pytest.approx(1 / 3)
    assert metrics["iou_mean"] == pytest.approx(0.25)
    assert metrics["pointing_macro"] == pytest.approx(0.75)
    assert metrics["boxes_scored"] == 3 and metrics["seconds_per_heatmap"] == 0.01
    assert metrics["pointing_Mass"] == 0.5 and metrics["iou_Nodule"] == 0.25
    assert metrics["pointing_Atelectasis"] is None  # no boxes: left out by Run.log_metrics


FILM = Path(__file__).parent / "data" / "films" / "00000013_003.png"  # a real NIH PNG, 1024 px


def _store_box_mask(tmp_path, side: int, box, frame=(1024, 1024), input_size=64):
    """The box's mask on the model's input, through the pipeline's own path: the film (or a
    copy resized to ``side``) prepared into a store, its size checked against the frame."""
    folder = tmp_path / f"copy{side}"
    folder.mkdir()
    name = "00000013_003.png"
    with Image.open(FILM) as film:
        film.convert("L").resize((side, side), Image.Resampling.BILINEAR).save(folder / name)
    store = _prepare(folder / name, name, input_size, tmp_path / f"s{side}")
    boxes = pd.DataFrame({"Image Index": [name], "Finding Label": ["Pleural_Thickening"],
                          "x": [box[0]], "y": [box[1]], "w": [box[2]], "h": [box[3]]},
                         index=[7])
    sizes = store.index.rename(columns={"source_width": "width", "source_height": "height"})
    chosen = select_boxes(boxes, [name], sizes, max_images=5, seed=0)
    check_frame(chosen, frame, "BBox_List_2017.csv")
    assert chosen[["width", "height"]].to_numpy().tolist() == [[side, side]]
    return box_mask(map_box(box, frame, input_size), (input_size, input_size))


def _prepare(path, name, size, out):
    prepare_store([path], [name], size, out, progress=None)
    return open_store(out, image_size=size)


def test_a_box_on_a_resized_copy_lands_where_it_lands_on_the_original(tmp_path):
    box = (601.0, 596.0, 216.0, 181.0)  # in NIH's 1024 frame, like every BBox_List row
    original = _store_box_mask(tmp_path, 1024, box)
    for side in (512, 64):
        copy = _store_box_mask(tmp_path, side, box)
        iou = (original & copy).sum() / (original | copy).sum()
        assert iou >= 0.9, side
    # Read in the 512 px copy's own pixels (scaled by the file's size), the box lands elsewhere.
    wrong = box_mask(map_box(box, (512, 512), 64), (64, 64))
    assert (original & wrong).sum() / (original | wrong).sum() < 0.1


def test_a_box_outside_its_frame_is_an_error_naming_the_row():
    boxes = pd.DataFrame({"Image Index": ["a.png", "b.png"], "Finding Label": ["Mass"] * 2,
                          "x": [10.0, 900.0], "y": [10.0, 20.0], "w": [50.0, 200.0],
                          "h": [50.0, 30.0]}, index=[2, 3])
    check_frame(boxes.iloc[:1], (1024, 1024), "boxes.csv")
    with pytest.raises(BoxFrameError, match=r"boxes.csv, row 3: box .*b.png reaches beyond "
                                            r"the frame 1024 x 1024 .*1 of 2 boxes"):
        check_frame(boxes, (1024, 1024), "boxes.csv")
    with pytest.raises(BoxFrameError, match="row 2"):
        check_frame(boxes.assign(x=[-1.0, 0.0]), 1024, "boxes.csv")


def test_an_image_that_does_not_fit_the_frame_is_an_error_naming_the_row():
    boxes = pd.DataFrame({"Image Index": ["a.png", "b.png"], "Finding Label": ["Mass"] * 2,
                          "x": 10.0, "y": 10.0, "w": 5.0, "h": 5.0,
                          "width": [512, 512], "height": [511, 400]}, index=[5, 9])
    check_frame(boxes.iloc[:1], (1024, 1024), "boxes.csv")  # a rounding pixel is a copy
    with pytest.raises(BoxFrameError, match=r"row 9: image b.png is 512 x 400 px, whose aspect "
                                            r"does not fit"):
        check_frame(boxes, (1024, 1024), "boxes.csv")
