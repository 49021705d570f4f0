"""Cost of reseeding TensorFlow between epochs: per-epoch `fit` time, two ways.

Usage: python benchmarks/epoch_reseed.py [--model efficientnetb0] [--size 64] [--images 640]
       [--epochs 3]

The trainer runs one `fit` per epoch and resets every random stream before it
(`cxr.training.fit.reset_random_state`). `keras.utils.set_random_seed` would also call
`tf.random.set_seed`, which clears TensorFlow's kernel cache, so the epoch's first step rebuilds
every kernel of the traced step. This fits the same model on the same epochs (after one
warm-up epoch that traces the step), reseeding before each epoch either with
`keras.utils.set_random_seed` or with `runtime.reseed_host_streams` (what the trainer does),
and prints the mean epoch time of each and their ratio.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from cxr.data.loading import Augmentation, make_dataset_from_store
from cxr.models import build
from cxr.training import runtime
from cxr.training.fit import compile_model
from cxr.training.losses import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="efficientnetb0")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    runtime.configure(seed=0)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size), dtype=np.uint8)
    labels = rng.integers(0, 2, (args.images, 14)).astype(np.float32)
    rows = np.arange(args.images)
    augmentation = Augmentation(flip=True, rotation=0.0, zoom=0.0, brightness=0.1)
    model = build(args.model, image_size=args.size)
    compile_model(model, build_loss("focal"), 1e-4, jit_compile=False)
    val = make_dataset_from_store(images[:64], rows[:64], labels[:64], 32)

    def epoch(index: int, reseed) -> float:
        reseed(1000 + index)
        data = make_dataset_from_store(images, rows, labels, 32, training=True,
                                       augmentation=augmentation, seed=0, epoch=(1, index))
        started = time.perf_counter()
        model.fit(data, validation_data=val, initial_epoch=index, epochs=index + 1, verbose=0)
        return time.perf_counter() - started

    trace = epoch(0, runtime.reseed_host_streams)
    ways = {"keras.utils.set_random_seed": keras.utils.set_random_seed,
            "runtime.reseed_host_streams": runtime.reseed_host_streams}
    means, index = {}, 1
    for name, reseed in ways.items():
        times = []
        for _ in range(args.epochs):
            times.append(epoch(index, reseed))
            index += 1
        means[name] = float(np.mean(times))
        print(f"{name:30s} epoch s: {', '.join(f'{t:.1f}' for t in times)}  "
              f"mean {means[name]:.1f}", flush=True)
    print(f"({args.model}, {args.size} px, {args.images} images per epoch, warm-up epoch "
          f"{trace:.1f} s)")
    ratio = means["keras.utils.set_random_seed"] / means["runtime.reseed_host_streams"]
    print(f"ratio (set_random_seed / reseed_host_streams): {ratio:.2f}x")


if __name__ == "__main__":
    main()
