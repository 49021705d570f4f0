"""Training throughput (images/s) per model and phase, on synthetic images.

Usage: python benchmarks/train_throughput.py [--size 64] [--batch 32] [--steps 8] [--models ...]
       [--jit-compile both]
"head" = backbone frozen (phase 1), "finetune" = everything trainable (phase 2). The first
step of each phase traces the graph: it is timed separately and left out of the rate.
`--jit-compile both` measures every phase with and without XLA (`train.jit_compile`) and
prints the ratio. Keras turns XLA off under TensorFlow's op determinism (with a warning
only), so with `on` or `both` both settings run without it (`train.deterministic: false`);
the XLA column says what Keras actually compiled.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf

from cxr.models import MODEL_NAMES, backbone_layers, build, set_backbone_trainable
from cxr.training import runtime
from cxr.training.fit import compile_model
from cxr.training.losses import build_loss


def measure(name: str, size: int, batch: int, steps: int, jit_compile: bool = False,
            options: dict | None = None) -> list[tuple[str, float, float]]:
    """[(phase, images/s, first-step seconds)] per phase; `options` go to `build` (the
    params' models.<name>.options)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch * steps, 14)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache()
    model = build(name, image_size=size, **(options or {}))
    phases = [("head", False), ("finetune", True)] if backbone_layers(model) else [("full", True)]
    results = []
    for phase, trainable in phases:
        set_backbone_trainable(model, trainable)
        # Raises XLAUnavailableError if Keras would compile without the XLA asked for.
        compile_model(model, build_loss("focal"), 1e-3, jit_compile=jit_compile)
        first = next(iter(data))
        started = time.perf_counter()
        model.train_on_batch(*first)
        trace_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for images, labels in data:
            model.train_on_batch(images, labels)
        rate = batch * steps / (time.perf_counter() - started)
        results.append((phase, rate, trace_seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    parser.add_argument("--jit-compile", choices=["off", "on", "both"], default="off",
                        help="XLA for the train step (train.jit_compile); both: each, and the ratio")
    args = parser.parse_args()
    runtime.configure(seed=0, deterministic=args.jit_compile == "off")
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.jit_compile]
    print(f"{'model':16s} {'phase':9s} {'XLA':4s} {'img/s':>8s} {'first step s':>13s}  "
          f"(size {args.size}, batch {args.batch}, {tf.config.list_physical_devices()[-1].name})")
    rates = {}
    for name in args.models:
        for jit in settings:
            for phase, rate, trace in measure(name, args.size, args.batch, args.steps, jit):
                rates[(name, phase, jit)] = rate
                print(f"{name:16s} {phase:9s} {'on' if jit else 'off':4s} {rate:8.1f} {trace:13.1f}")
    for name in args.models:
        jit = settings[0]
        if (name, "head", jit) in rates:
            print(f"{name}: frozen head / full fine-tune speed ratio "
                  f"{rates[(name, 'head', jit)] / rates[(name, 'finetune', jit)]:.1f}x")
        for (model, phase, on), rate in rates.items():
            if model == name and on and (model, phase, False) in rates:
                print(f"{name} {phase}: XLA on / off speed ratio "
                      f"{rate / rates[(model, phase, False)]:.2f}x")


if __name__ == "__main__":
    main()
