"""Monte-Carlo dropout cost: full passes vs features once + the head only.

Usage: python benchmarks/mc_dropout.py [--model densenet121] [--size 64] [--images 320]
                                       [--passes 25] [--batch 64]

(a) `mc_full_passes`: the whole model T times (what `model(x, training=True)` loops cost,
    without their BatchNorm bug);
(b) features once, then the head T times in a Python loop (one pass per call);
(c) features once, then one vectorised head call for all T passes (`mc_dropout_predict`,
    `layers="head"`: the head's dropout only).
(a)-(c) use the same masks, so they agree to float tolerance (checked below).
(d) `mc_dropout_predict(layers="all")`: T full passes sampling every Dropout layer, the
    backbone's too (EfficientNet's stochastic depth); its time includes tracing its graph
    once, as every call does. Other masks, so not compared number for number.
Random weights; the feature model is traced before the timing starts ((a)-(c) share it).
The last lines give the time per image of `layers="head"` vs `layers="all"` and their ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from cxr.evaluation.uncertainty import (
    MonteCarloHead,
    dropout_layers,
    mc_dropout_predict,
    mc_full_passes,
)
from cxr.models import MODEL_NAMES, build
from cxr.training import runtime


def head_in_a_loop(model, images: np.ndarray, passes: int, seed: int, batch: int) -> np.ndarray:
    """(b): features once per batch, then `passes` head calls of one pass each."""
    head = MonteCarloHead.of(model)
    chunks = []
    for start in range(0, len(images), batch):
        features = head.features(images[start : start + batch])
        masks = head.masks(seed, start, len(features), passes)
        chunks.append(np.stack([
            head.sample(features, [mask[t : t + 1] for mask in masks], 1)[0]
            for t in range(passes)
        ]))
    return np.concatenate(chunks, axis=1)


def warm_up(model, images: np.ndarray, batch: int) -> None:
    """Trace the feature model for every batch shape the paths will see (all share it)."""
    head = MonteCarloHead.of(model)
    for n in sorted({min(batch, len(images)), len(images) % batch} - {0}):
        features = head.features(images[:n])
        head.sample(features, head.masks(0, 0, n, 2), 2)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="densenet121", choices=MODEL_NAMES)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--passes", type=int, default=25)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    runtime.configure(seed=0, deterministic=False)
    model = build(args.model, image_size=args.size)
    images = np.random.default_rng(0).uniform(
        0, 255, (args.images, args.size, args.size, 3)).astype(np.float32)
    seed, batch = 0, args.batch
    device = tf.config.list_physical_devices()[-1].name
    print(f"{args.model} at {args.size} px, {args.images} images, T={args.passes}, "
          f"batch {batch}, {device}")

    warm_up(model, images, batch)
    full_s, full = timed(lambda: mc_full_passes(model, images, args.passes, seed, batch).samples)
    loop_s, loop = timed(lambda: head_in_a_loop(model, images, args.passes, seed, batch))
    fast_s, fast = timed(lambda: mc_dropout_predict(model, images, args.passes, seed, batch,
                                                    keep_samples=True).samples)
    all_s, _ = timed(lambda: mc_dropout_predict(model, images, args.passes, seed, batch,
                                                layers="all"))
    rows = [("(a) full passes", full_s), ("(b) features once + head loop", loop_s),
            ("(c) features once + vectorised head", fast_s),
            ("(d) layers=all: every dropout, T passes", all_s)]
    for name, seconds in rows:
        print(f"{name:42s} {seconds:8.2f} s  {full_s / seconds:6.1f}x")
    difference = max(np.abs(loop - full).max(), np.abs(fast - full).max())
    print(f"max |difference| of the sampled probabilities vs (a): {difference:.1e}")
    sampled = len(dropout_layers(model))
    per_image = {name: 1000 * seconds / args.images for name, seconds in
                 (("head", fast_s), ("all", all_s))}
    print(f"layers=head: {per_image['head']:.2f} ms/image (head dropout only); "
          f"layers=all: {per_image['all']:.2f} ms/image ({sampled} Dropout layers); "
          f"all/head = {all_s / fast_s:.1f}x")


if __name__ == "__main__":
    main()
