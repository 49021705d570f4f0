"""Grad-CAM cost: seconds per heatmap, batched vs one image per call, per model and size.

Usage: python benchmarks/gradcam.py [--models simple_cnn densenet121 ...] [--sizes 64 224]
                                    [--images 16] [--batch 16]

Random weights (the cost does not depend on them). The grad model is traced before the timing
starts (the trace is reported on its own: it is paid once per model and process). Batched: all
images in calls of --batch; one by one: one call per image, as an interactive tool would.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cxr.interpret.gradcam import GradCam, explained_layer, gradcam
from cxr.models import MODEL_NAMES, build
from cxr.training import runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 224])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    runtime.configure(0)
    print(f"{'model':<15} {'size':>4} {'layer':<16} {'grid':>5} {'trace s':>8} "
          f"{'batched ms':>11} {'one-by-one ms':>14} {'ratio':>6}")
    for size in args.sizes:
        for name in args.models:
            model = build(name, image_size=size)
            layer = explained_layer(name)
            images = np.random.default_rng(0).uniform(0, 255, (args.images, size, size, 3))
            classes = np.arange(args.images) % 14
            started = time.perf_counter()
            gradcam(model, images[:1], classes[:1], layer)
            trace = time.perf_counter() - started
            started = time.perf_counter()
            gradcam(model, images, classes, layer, batch_size=args.batch)
            batched = (time.perf_counter() - started) / args.images
            started = time.perf_counter()
            for i in range(args.images):
                gradcam(model, images[i : i + 1], classes[i : i + 1], layer)
            single = (time.perf_counter() - started) / args.images
            grid = GradCam.of(model, layer).rows.shape[1]
            print(f"{name:<15} {size:>4} {layer:<16} {grid:>5} {trace:>8.2f} "
                  f"{batched * 1000:>11.1f} {single * 1000:>14.1f} {single / batched:>6.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
