"""Input-pipeline throughput: decoding 1024x1024 PNGs every epoch vs the prepared uint8 store.

Usage: python benchmarks/input_pipeline.py [--images 200] [--size 224] [--epochs 3]
           [--processes 2]
Writes --images chest-film-like 1024 px PNGs (the NIH size) to a temp dir, then times
(1) today's path pipeline (`make_dataset`, tf decode + antialiased resize, no cache) and
(2) `prepare_store` once + `make_dataset_from_store` epochs (global shuffle, gather, gray->RGB),
both training=True without augmentation (augmentation costs the same in both), batch 32.
Prints img/s of each, their ratio, the one-off prepare time, and the store's size on disk
per 1,000 images.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.data.loading import make_dataset, make_dataset_from_store
from cxr.data.prepare import open_store, prepare_store


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
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=224, help="model input size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="prepare threads / tf calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_pngs(Path(tmp), args.images)
        names = [Path(p).name for p in paths]
        labels = np.zeros((len(paths), 14), np.float32)

        raw = make_dataset(paths, labels, args.size, 32, training=True, cache="none",
                           parallel_calls=args.processes)
        raw_rates = [epoch_rate(raw, len(paths)) for _ in range(args.epochs)]
        print("decode every epoch, img/s: " + ", ".join(f"{r:.1f}" for r in raw_rates))

        started = time.perf_counter()
        prepare_store(paths, names, args.size, Path(tmp) / "store", processes=args.processes,
                      progress=None)
        prepare_seconds = time.perf_counter() - started
        store = open_store(Path(tmp) / "store", image_size=args.size)
        stored = make_dataset_from_store(store.images, store.rows_for(names), labels, 32,
                                         training=True, parallel_calls=args.processes)
        epoch_rate(stored, len(paths))  # warm-up: traces the map function once
        store_rates = [epoch_rate(stored, len(paths)) for _ in range(max(args.epochs, 5))]
        print("prepared store, img/s:     " + ", ".join(f"{r:.0f}" for r in store_rates))

        raw_rate, store_rate = float(np.median(raw_rates)), float(np.median(store_rates))
        disk = sum(f.stat().st_size for f in (Path(tmp) / "store").iterdir())
        print(f"prepare once: {prepare_seconds:.1f} s for {len(paths)} images "
              f"({len(paths) / prepare_seconds:.1f} img/s, {args.processes} threads)")
        print(f"median epoch: store {store_rate:.0f} img/s vs decoding {raw_rate:.1f} img/s: "
              f"ratio {store_rate / raw_rate:.0f}x")
        print(f"store on disk at {args.size} px: {disk / 1e6:.2f} MB for {len(paths)} images = "
              f"{disk / len(paths) * 1000 / 1e6:.1f} MB per 1,000 images")


if __name__ == "__main__":
    main()
