"""One-GPU check on Keras/JAX without TensorFlow: throughput, two-phase training, MC dropout.

Usage: KERAS_BACKEND=jax python benchmarks/gpu_check.py --json OUT.json
           [--size 224] [--batch 32] [--steps 20] [--patients 120] [--models ...]
           [--passes 10] [--mc-images 64]

On phantoms rendered and prepared at ``--size`` (the pipeline's own generator and store), per
model: training images/s in float32 and in mixed precision (``mixed_bfloat16``: no loss
scaling; ``--policy`` to change), the first step (tracing + compilation) timed apart; a short
two-phase ``train_two_phase`` run (one head epoch, one fine-tune epoch) whose losses must be
finite; and the Monte-Carlo dropout time per image of ``layers: head`` and ``layers: all``,
and their ratio. Prints a compact table, writes everything to ``--json``; exit status 1 if a
loss is not finite or TensorFlow was imported. Meant for a GPU in under 8 minutes at the
defaults (not yet timed on one: every model compiles about six XLA programs, which dominates);
``--size 32 --steps 2 --patients 20 --models simple_cnn`` runs it on a CPU (~40 s, 2 cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cxr.backend import tensorflow_imported  # noqa: E402
from cxr.data.loading import Augmentation, make_dataset_from_store  # noqa: E402
from cxr.data.nih import build_label_table  # noqa: E402
from cxr.data.phantoms import PhantomConfig, generate_phantoms  # noqa: E402
from cxr.data.prepare import open_store, prepare_store  # noqa: E402
from cxr.evaluation.uncertainty import mc_dropout_predict  # noqa: E402
from cxr.labels import LABELS  # noqa: E402
from cxr.models import MODEL_NAMES, backbone_layers, build  # noqa: E402
from cxr.training import runtime  # noqa: E402
from cxr.training.fit import TrainConfig, compile_model, train_two_phase  # noqa: E402
from cxr.training.losses import build_loss  # noqa: E402


def phantom_store(folder: Path, patients: int, size: int):
    """Phantoms rendered at `size` and prepared: (uint8 images (n, size, size), labels)."""
    raw = folder / "raw"
    generate_phantoms(raw, PhantomConfig(n_patients=patients, image_size=size, seed=0,
                                         processes=min(os.cpu_count() or 1, 8)))
    table = build_label_table(raw / "Data_Entry_2017.csv", raw)
    prepare_store(table["path"], table["Image Index"], size, folder / "store",
                  processes=min(os.cpu_count() or 1, 8), progress=None)
    store = open_store(folder / "store", image_size=size)
    return np.asarray(store.images), table[list(LABELS)].to_numpy(np.float32)


def throughput(name: str, images, labels, batch: int, steps: int, policy: str) -> dict:
    """Training img/s of the whole network (every layer trainable) under `policy`."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build(name, image_size=images.shape[1])
        compile_model(model, build_loss("focal"), 1e-4, jit_compile=True)
        data = make_dataset_from_store(images, np.arange(len(images)), labels, batch)
        batches = [data[i % len(data)] for i in range(steps + 1)]
        started = time.perf_counter()
        first = model.train_on_batch(*batches[0])
        first_seconds = time.perf_counter() - started
        started = time.perf_counter()
        for x, y in batches[1:]:
            loss = model.train_on_batch(x, y)
        keras.ops.convert_to_numpy(model.trainable_variables[0])  # wait for the device
        seconds = time.perf_counter() - started
        loss = float(np.asarray(loss if not isinstance(loss, list) else loss[0]))
        return {"img_per_s": round(sum(len(x) for x, _ in batches[1:]) / seconds, 1),
                "first_step_s": round(first_seconds, 2), "loss": loss,
                "first_loss": float(np.asarray(first if not isinstance(first, list)
                                               else first[0]))}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def two_phase(name: str, images, labels, batch: int, folder: Path) -> dict:
    model = build(name, image_size=images.shape[1])
    split = int(len(images) * 0.8)
    train = make_dataset_from_store(images, np.arange(split), labels[:split], batch,
                                    training=True, augmentation=Augmentation(rotation=0.0,
                                                                             zoom=0.0))
    val = make_dataset_from_store(images, np.arange(split, len(images)), labels[split:], batch)
    config = TrainConfig(head_epochs=1, finetune_epochs=1, head_learning_rate=1e-3,
                         finetune_learning_rate=1e-4, patience=2, reduce_lr_patience=2,
                         reduce_lr_factor=0.5, min_learning_rate=1e-5, schedule="plateau",
                         warmup_epochs=0, weight_decay=0.0, jit_compile=True)
    started = time.perf_counter()
    history = train_two_phase(model, train, val, build_loss("focal"), config, folder / name,
                              verbose=0, strategy=runtime.distribution_strategy("default"))
    losses = [row[key] for rows in history.values() for row in rows
              for key in ("loss", "val_loss") if key in row]
    return {"phases": {phase: len(rows) for phase, rows in history.items()},
            "has_backbone": bool(backbone_layers(model)),
            "losses": [round(v, 5) for v in losses],
            "finite": bool(losses) and all(math.isfinite(v) for v in losses),
            "seconds": round(time.perf_counter() - started, 1), "model": model}


def mc_ratio(model, images, passes: int) -> dict:
    x = np.repeat(images[..., None], 3, axis=-1).astype(np.float32)
    timings = {}
    for layers in ("head", "all"):
        mc_dropout_predict(model, x[:8], passes=passes, layers=layers)  # compile
        started = time.perf_counter()
        result = mc_dropout_predict(model, x, passes=passes, layers=layers, batch_size=32)
        timings[layers] = (time.perf_counter() - started) / len(x)
        if not np.isfinite(result.mean).all():
            raise SystemExit(f"MC dropout ({layers}) gave non-finite means")
    return {"head_ms_per_image": round(timings["head"] * 1000, 2),
            "all_ms_per_image": round(timings["all"] * 1000, 2),
            "all_over_head": round(timings["all"] / timings["head"], 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--patients", type=int, default=120, help="phantom patients")
    parser.add_argument("--models", nargs="*", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--passes", type=int, default=10, help="MC-dropout passes")
    parser.add_argument("--mc-images", type=int, default=64)
    parser.add_argument("--policy", default="mixed_bfloat16",
                        choices=runtime.PRECISION_POLICIES)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    runtime.configure(seed=0, deterministic=False)
    devices = [str(d) for d in _devices()]
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = phantom_store(Path(tmp), args.patients, args.size)
        results = {"backend": keras.backend.backend(), "devices": devices,
                   "size": args.size, "batch": args.batch, "images": len(images),
                   "policy": args.policy, "models": {}}
        print(f"{len(images)} phantoms at {args.size} px on {keras.backend.backend()} "
              f"({', '.join(devices)}); phantoms + store {time.perf_counter() - started:.0f} s")
        print(f"{'model':15s} {'fp32 img/s':>10s} {'mixed img/s':>11s} {'2-phase s':>9s} "
              f"{'finite':>6s} {'MC all/head':>11s}")
        for name in args.models:
            entry = {"fp32": throughput(name, images, labels, args.batch, args.steps, "float32"),
                     "mixed": throughput(name, images, labels, args.batch, args.steps,
                                         args.policy)}
            run = two_phase(name, images, labels, args.batch, Path(tmp) / "checkpoints")
            entry["two_phase"] = {k: v for k, v in run.items() if k != "model"}
            entry["mc_dropout"] = mc_ratio(run["model"], images[: args.mc_images], args.passes)
            results["models"][name] = entry
            print(f"{name:15s} {entry['fp32']['img_per_s']:10.1f} "
                  f"{entry['mixed']['img_per_s']:11.1f} {run['seconds']:9.1f} "
                  f"{str(run['finite']):>6s} {entry['mc_dropout']['all_over_head']:10.1f}x")
    results["tensorflow_imported"] = tensorflow_imported()
    results["seconds"] = round(time.perf_counter() - started, 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    finite = all(m["two_phase"]["finite"] and math.isfinite(m["fp32"]["loss"])
                 and math.isfinite(m["mixed"]["loss"]) for m in results["models"].values())
    print(f"{results['seconds']:.0f} s in all; TensorFlow imported: "
          f"{results['tensorflow_imported']}; every loss finite: {finite} -> {args.json}")
    return 0 if finite and not results["tensorflow_imported"] else 1


def _devices():
    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()
    return [keras.backend.backend()]


if __name__ == "__main__":
    sys.exit(main())
