"""DVC stage `localize@MODEL`: do the model's Grad-CAM heatmaps point at the lesions?

Usage: python stages/localize.py MODEL --split CSV --store STORE --model-dir DIR
       --bbox CSV --metrics JSON --examples PNG
For at most localize.max_images test images that have a lesion box (the box file; drawn by
seed, the same images for every model), explains each box's finding with Grad-CAM
(`cxr.interpret.gradcam`) and scores the heatmap against the box mapped onto the model's input
(`cxr.interpret.localization`: pointing game, IoU, chance level). Box coordinates are in the
frame `data.bbox_frame` (NIH: its 1024 px PNGs) whatever size the files on disk have; a box
outside the frame, or a file whose aspect does not fit it, is an error naming the CSV row. The
explained layer, input size and label order come from the model's metadata.json. Writes the localize metrics
JSON (per finding and overall, plus the time per heatmap) and the example overlays PNG; logs
them to MLflow (`cxr.interpret.localization.localization_log_metrics`).
"""

import time

import _common
import keras
import numpy as np

import cxr.models.layers  # noqa: F401  (registers the custom layers before loading)
from cxr import tracking
from cxr.data.loading import make_dataset_from_store
from cxr.data.nih import read_bbox_list
from cxr.data.prepare import open_store
from cxr.interpret import gradcam as cam
from cxr.interpret.localization import (
    check_frame,
    localization_log_metrics,
    localization_summary,
    map_box,
    score,
    select_boxes,
)
from cxr.interpret.overlays import examples_grid
from cxr.io import read_table, write_json
from cxr.models.metadata import read_metadata
from cxr.models.registry import MODEL_NAMES
from cxr.progress import Progress, printer


def main() -> None:
    parser = _common.paths(
        _common.parser(__doc__, models=MODEL_NAMES), split="the split table",
        model_dir="the trained model's folder (model.keras, metadata.json)",
        store="the prepared image store (images, and each file's own size)",
        bbox="NIH BBox_List CSV",
        metrics="the localize metrics (JSON)", examples="example overlays (PNG)")
    args, params = _common.start(parser)
    name, settings = args.model, params.localize
    metadata = read_metadata(args.model_dir)
    model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
    image_size, layer = int(metadata["image_size"]), metadata["gradcam_layer"]
    labels = list(metadata["labels"])
    index = {label: i for i, label in enumerate(labels)}

    table = read_table(args.split)
    test = table[table["split"] == "test"].set_index("Image Index")
    store = open_store(args.store, image_size=image_size)
    frame = (params.data.bbox_frame.width, params.data.bbox_frame.height)
    all_boxes = read_bbox_list(args.bbox)
    check_frame(all_boxes, frame, str(args.bbox))
    candidates = all_boxes.loc[all_boxes["Image Index"].isin(set(test.index)), "Image Index"]
    # The store recorded each file's own size: each scored file must fit the boxes' frame.
    sizes = store.index.rename(columns={"source_width": "width", "source_height": "height"})
    boxes = select_boxes(all_boxes, test.index, sizes, settings.max_images, params.seed)
    check_frame(boxes, frame, str(args.bbox))

    # One heatmap per (image, finding): an image may hold several boxes of one finding.
    pairs = boxes[["Image Index", "Finding Label"]].drop_duplicates().reset_index(drop=True)
    names = list(dict.fromkeys(pairs["Image Index"]))
    position = {image: i for i, image in enumerate(names)}
    images = np.zeros((0, image_size, image_size, 3), dtype=np.float32)
    if names:
        data = make_dataset_from_store(store.images, store.rows_for(names), None,
                                       settings.batch_size,
                                       parallel_calls=params.pipeline.parallel_calls)
        images = np.concatenate([np.asarray(batch) for batch in data])
    image_of_pair = pairs["Image Index"].map(position).to_numpy()
    classes = pairs["Finding Label"].map(index).to_numpy()

    heatmaps = np.zeros((len(pairs), image_size, image_size), dtype=np.float32)
    trace_seconds = seconds = 0.0
    if len(pairs):
        started = time.perf_counter()  # the first call traces the gradient graph
        cam.gradcam(model, images[image_of_pair[:1]], classes[:1], layer, settings.batch_size)
        trace_seconds = time.perf_counter() - started
        printer(f"localize@{name}: Grad-CAM graph traced in {trace_seconds:.0f} s")
        done = Progress(f"localize@{name}: Grad-CAM", len(pairs), unit="heatmaps")
        started = time.perf_counter()
        for start in range(0, len(pairs), settings.batch_size):
            chunk = slice(start, start + settings.batch_size)
            heatmaps[chunk] = cam.gradcam(model, images[image_of_pair[chunk]], classes[chunk],
                                          layer, settings.batch_size)
            done.advance(len(heatmaps[chunk]))
        seconds = time.perf_counter() - started
    heatmap_of = {(row["Image Index"], row["Finding Label"]): i for i, row in pairs.iterrows()}

    records, examples = [], {}
    for _, box in boxes.iterrows():
        key = (box["Image Index"], box["Finding Label"])
        mapped = map_box((box["x"], box["y"], box["w"], box["h"]), frame, image_size)
        heatmap = heatmaps[heatmap_of[key]]
        record = {"image": key[0], "finding": key[1],
                  **score(heatmap, mapped, settings.iou_threshold, settings.pointing_tolerance)}
        records.append(record)
        shown = examples.setdefault(key[1], [])
        if len(shown) < settings.examples_per_finding:
            shown.append({"image": images[position[key[0]]], "heatmap": heatmap, "box": mapped,
                          "hit": record["hit"], "iou": record["iou"], "name": key[0]})

    examples = {finding: examples[finding] for finding in labels if finding in examples}
    summary = localization_summary(records)
    explainer = cam.GradCam.of(model, layer)
    result = {
        "model": name,
        "layer": layer,
        "image_size": image_size,
        "grid": list(explainer.grid),
        "placement": explainer.placement,
        "unit_centres": explainer.unit_centres,
        "data_source": params.data.source,
        "boxes_file": str(args.bbox),
        "box_frame": list(frame),
        "boxes_in_file": int(len(all_boxes)),
        "images_with_boxes_in_file": int(all_boxes["Image Index"].nunique()),
        "findings_with_boxes_in_file": sorted(all_boxes["Finding Label"].unique().tolist()),
        "test_images_with_boxes": int(candidates.nunique()),
        "images_scored": len(names),
        "boxes_scored": len(records),
        "heatmaps": len(pairs),
        "max_images": settings.max_images,
        "iou_threshold": settings.iou_threshold,
        "pointing_tolerance": settings.pointing_tolerance,
        "batch_size": settings.batch_size,
        "seconds_per_heatmap": seconds / len(pairs) if len(pairs) else None,
        "trace_seconds": round(trace_seconds, 3),
        **summary,
    }
    write_json(result, args.metrics)
    examples_grid(examples, f"{name}: Grad-CAM ({layer}) on test images with a lesion box",
                  args.examples)
    with tracking.stage_run(f"localize@{name}", _common.dvc_root(), params, model=name,
                            dvc_exp_name=_common.dvc_exp_name()) as run:
        run.log_metrics(localization_log_metrics(result))
        run.log_artifact(args.examples, "plots")
        run.log_artifact(args.metrics)
        result["mlflow_run_id"] = run.run_id
    write_json(result, args.metrics)
    overall = summary["overall"]
    per_heatmap = result["seconds_per_heatmap"]
    print(f"localize@{name}: {len(records)} boxes on {len(names)} test images; pointing game "
          f"{_rate(overall['pointing'])} (chance {_rate(overall['chance'])}), mean IoU "
          f"{_rate(overall['iou_mean'])}; "
          + (f"{per_heatmap * 1000:.1f} ms per heatmap" if per_heatmap else "no heatmaps"))


def _rate(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
