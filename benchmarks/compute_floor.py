"""How close training runs to this CPU's arithmetic peak, and the floor that sets on the default.

Usage: python benchmarks/compute_floor.py [--params params.yaml] [--split data/processed/split.csv]
       [--models ...] [--steps 12] [--matmul 2048]

For each model at the params' image size and batch: forward multiply-accumulates per image
(`cxr.complexity.forward_macs`), training FLOPs per image (3 forward passes, 2 FLOPs per
MAC; a frozen backbone's epochs count one forward pass), the measured training throughput of
each phase it trains in (`train_throughput.measure`, synthetic images) and the arithmetic rate
that implies, as a share of the CPU's float32 matrix-multiply rate (TensorFlow, square
matrices of side --matmul, best of five). Then, for the params'
epochs and the split's training images, the arithmetic of each model's training and two
times: at the measured throughput, and at the matmul rate, the floor no schedule of these
epochs can beat on this CPU (it ignores validation, the input pipeline and tracing).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import measure  # noqa: E402

from cxr.complexity import forward_macs  # noqa: E402
from cxr.models import MODEL_NAMES, build  # noqa: E402
from cxr.params import load_params  # noqa: E402
from cxr.training import runtime  # noqa: E402

TRAIN_PASSES = 3  # forward + backward (gradients for inputs and weights: about 2 forwards)


def matmul_rate(side: int, repeats: int = 5) -> float:
    """Best float32 matmul rate in FLOP/s over `repeats` timings of 10 products."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((side, side), dtype=np.float32))
    b = tf.constant(rng.standard_normal((side, side), dtype=np.float32))
    product = tf.function(tf.linalg.matmul)
    product(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(10):
            result = product(a, b)
        result.numpy()
        best = max(best, 10 * 2 * side ** 3 / (time.perf_counter() - started))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--split", default="data/processed/split.csv",
                        help="counts the training images (missing: --train-images)")
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES))
    parser.add_argument("--steps", type=int, default=12, help="timed steps per phase")
    parser.add_argument("--matmul", type=int, default=2048, help="side of the matmul check")
    args = parser.parse_args()
    params = load_params(args.params)
    size, batch = params.pipeline.image_size, params.pipeline.batch_size
    if args.train_images is not None:
        train_images = args.train_images
    elif Path(args.split).exists():
        train_images = int((pd.read_csv(args.split, usecols=["split"])["split"] == "train").sum())
    else:
        raise SystemExit(f"{args.split} not found: run the pipeline's split stage or pass "
                         f"--train-images N")
    runtime.configure(seed=0, deterministic=True)
    peak = matmul_rate(args.matmul)
    print(f"float32 matmul {args.matmul}x{args.matmul}: {peak / 1e9:.0f} GFLOP/s "
          f"({tf.config.threading.get_intra_op_parallelism_threads() or 'all'} threads); "
          f"{train_images} training images, {size} px, batch {batch}")
    print(f"{'model':16s} {'phase':8s} {'MMAC/img':>9s} {'img/s':>7s} {'GFLOP/s':>8s} "
          f"{'of peak':>8s} {'epochs':>6s} {'TFLOP':>7s} {'measured s':>10s} {'floor s':>8s}")
    measured_total = floor_total = 0.0
    for name in args.models:
        model_params = params.models[name]
        options = dict(model_params.options)
        model = build(name, image_size=size, **options)
        macs = forward_macs(model)
        del model
        rates = {phase: rate for phase, rate, _ in measure(name, size, batch, args.steps,
                                                           options=options)}
        if "full" in rates:  # no backbone: every epoch trains every layer
            plan = [("full", model_params.head_epochs + model_params.finetune_epochs,
                     TRAIN_PASSES)]
        else:  # a frozen backbone runs forward only (its weights and inputs need no gradient)
            plan = [("head", model_params.head_epochs, 1),
                    ("finetune", model_params.finetune_epochs, TRAIN_PASSES)]
        for phase, epochs, passes in plan:
            if epochs == 0:
                continue
            flop_per_image = passes * 2 * macs
            achieved = rates[phase] * flop_per_image
            work = flop_per_image * train_images * epochs
            measured, floor = train_images * epochs / rates[phase], work / peak
            measured_total += measured
            floor_total += floor
            print(f"{name:16s} {phase:8s} {macs / 1e6:9.1f} {rates[phase]:7.1f} "
                  f"{achieved / 1e9:8.1f} {achieved / peak:8.2f} {epochs:6d} {work / 1e12:7.1f} "
                  f"{measured:10.0f} {floor:8.0f}")
    print(f"all models: {measured_total / 60:.1f} min of training at the measured rates, "
          f"{floor_total / 60:.1f} min at the matmul rate: measured / floor "
          f"{measured_total / floor_total:.2f}x")


if __name__ == "__main__":
    main()
