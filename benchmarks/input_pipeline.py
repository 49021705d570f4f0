"""Input-pipeline throughput from 1024x1024 PNGs (the NIH size), without and with the resize cache.

Usage: python benchmarks/input_pipeline.py [--images 96] [--size 224] [--epochs 3]
Prints images/s for an epoch that decodes every PNG, for a cached epoch, and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data.loading import Augmentation, make_dataset


def write_pngs(folder: Path, count: int, size: int = 1024) -> list[str]:
    """Chest-film-like 8-bit PNGs: smooth structure plus grain, so they compress like real ones."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:size, 0:size] / size
    paths = []
    for i in range(count):
        base = 120 + 60 * np.sin(6 * xs + i) * np.cos(4 * ys) + rng.normal(0, 12, (size, size))
        path = folder / f"{i:08d}_000.png"
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def epoch_rate(dataset, n_images: int) -> float:
    start = time.perf_counter()
    for _ in dataset:
        pass
    return n_images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(Path(tmp), args.images)
        labels = np.zeros((len(paths), 14), np.float32)
        results = {}
        for cache in ("none", "memory", str(Path(tmp) / "cache")):
            dataset = make_dataset(paths, labels, args.size, 32, training=True,
                                   augmentation=Augmentation(), cache=cache)
            rates = [epoch_rate(dataset, len(paths)) for _ in range(args.epochs)]
            label = "file" if cache.endswith("cache") else cache
            results[label] = rates
            print(f"cache={label:6s} epoch images/s: " + ", ".join(f"{r:7.1f}" for r in rates))
        uncached = float(np.mean(results["none"]))
        for label in ("memory", "file"):
            cached = float(np.mean(results[label][1:]))
            print(f"{label} cache, epochs after the first: {cached:.1f} img/s vs {uncached:.1f} "
                  f"decoding every epoch: ratio {cached / uncached:.1f}x")


if __name__ == "__main__":
    main()
