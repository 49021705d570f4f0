"""DVC stage `train@MODEL`: two-phase training of one model on the split -> models/MODEL/.

Usage: python stages/train.py MODEL
Writes models/MODEL/model.keras, models/MODEL/history.json, metrics/train/MODEL.json and
plots/MODEL/train_history.csv; logs the run to MLflow. Resumable: a killed run continues
from .checkpoints/MODEL when it is started again with the same settings.
"""

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from cxr import tracking
from cxr.data.loading import Augmentation, make_dataset
from cxr.evaluation import macro_auc, per_class_auc
from cxr.io import write_json, write_table
from cxr.labels import LABELS
from cxr.models import MODEL_NAMES, build
from cxr.params import flatten, load_params
from cxr.training import runtime
from cxr.training.fit import TrainConfig, history_rows, train_two_phase
from cxr.training.losses import build_loss

SPLIT = "data/processed/split.csv"
ROOT = Path(os.environ.get("DVC_ROOT", "."))  # dvc exp run --queue runs in a temp copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODEL_NAMES)
    name = parser.parse_args().model
    params = load_params()
    if name not in params.models:
        raise SystemExit(f"params.yaml: no block models.{name}; add one (see params.yaml)")
    model_params = params.models[name]
    runtime.configure(params.seed, params.train.deterministic, params.train.mixed_precision)

    table = pd.read_csv(SPLIT, dtype={"path": str}, keep_default_na=False)
    train_rows, val_rows = table[table["split"] == "train"], table[table["split"] == "val"]
    pipe = params.pipeline
    common = dict(image_size=pipe.image_size, batch_size=pipe.batch_size, cache=params.data.cache,
                  parallel_calls=pipe.parallel_calls, prefetch=pipe.prefetch)
    train_data = make_dataset(train_rows["path"], train_rows[list(LABELS)].to_numpy(),
                              training=True, augmentation=Augmentation(**asdict(pipe.augment)),
                              seed=params.seed, shuffle_buffer=pipe.shuffle_buffer, **common)
    val_data = make_dataset(val_rows["path"], val_rows[list(LABELS)].to_numpy(), **common)

    config = TrainConfig(**{k: v for k, v in asdict(model_params).items() if k != "options"},
                         jit_compile=params.train.jit_compile)
    fingerprint = {"model": name, "model_params": asdict(model_params),
                   "train": asdict(params.train), "loss": asdict(params.loss),
                   "pipeline": asdict(pipe), "seed": params.seed,
                   "split_rows": int(len(table)),
                   "split_checksum": int(pd.util.hash_pandas_object(table).sum() % 2**61)}

    out_dir, checkpoints = Path("models") / name, Path(".checkpoints") / name
    uri = tracking.resolve_tracking_uri(params.mlflow.tracking_uri, ROOT)
    tags = tracking.run_tags(f"train@{name}", ROOT, params.data.source,
                             os.environ.get("DVC_EXP_NAME", ""), model=name)
    with tracking.start_run(uri, params.mlflow.experiment, f"train@{name}", flatten(params), tags,
                            ROOT / tracking.ARTIFACTS_DIR) as run:
        strategy = runtime.distribution_strategy(params.train.strategy)
        with strategy.scope():
            model = build(name, image_size=pipe.image_size, weights=params.train.weights,
                          **model_params.options)
            loss = build_loss(params.loss.name, params.loss.alpha, params.loss.gamma,
                              train_labels=train_rows[list(LABELS)].to_numpy())
        global_epoch = {"n": 0}

        def log_epoch(phase: str, row: dict) -> None:
            global_epoch["n"] += 1
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=global_epoch["n"])

        started = time.perf_counter()
        history = train_two_phase(model, train_data, val_data, loss, config, checkpoints,
                                  on_epoch=log_epoch, verbose=params.train.verbose,
                                  fingerprint=fingerprint, strategy=strategy)
        seconds = time.perf_counter() - started

        val_scores = model.predict(val_data, verbose=0)
        val_auc = per_class_auc(val_rows[list(LABELS)].to_numpy(), val_scores, LABELS)
        rows = history_rows(history)
        epochs_run = len(rows)
        summary = {
            "model": name,
            "val_macro_auc": macro_auc(val_auc),
            "val_auc": {label: entry["auc"] for label, entry in val_auc.items()},
            "epochs": {phase: len(phase_rows) for phase, phase_rows in history.items()},
            "final": {k: v for k, v in rows[-1].items() if k not in ("step", "phase")}
            if rows else {},
            "train_images": int(len(train_rows)),
            "train_seconds": round(seconds, 1),
            "train_images_per_second": round(len(train_rows) * epochs_run / seconds, 1)
            if epochs_run else None,
            "parameters": int(model.count_params()),
            "mlflow_run_id": run.run_id,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / "model.keras")
        (out_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        write_table(pd.DataFrame(rows), Path("plots") / name / "train_history.csv")
        write_json(summary, Path("metrics/train") / f"{name}.json")
        for path in (out_dir / "model.keras", out_dir / "history.json",
                     Path("plots") / name / "train_history.csv"):
            run.log_artifact(path)
        run.log_metrics({"val_macro_auc_sklearn": summary["val_macro_auc"]})
    shutil.rmtree(checkpoints, ignore_errors=True)  # finished: nothing left to resume
    print(f"train@{name}: val macro AUC {summary['val_macro_auc']:.4f} after {epochs_run} epochs "
          f"in {seconds:.0f} s ({summary['train_images_per_second']} img/s)")


if __name__ == "__main__":
    main()
