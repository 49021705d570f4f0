"""DVC stage `train@MODEL`: two-phase training of one model on the split.

Usage: python stages/train.py MODEL --split SPLIT_CSV --store STORE --out MODEL_DIR --metrics JSON
       --history CSV --checkpoints DIR
Writes MODEL_DIR/model.keras, MODEL_DIR/history.json, MODEL_DIR/metadata.json (label order,
image size, Grad-CAM layer, validation thresholds), the train metrics JSON and the per-epoch
history CSV; logs the run to MLflow, the model as an MLflow model (`cxr.serving`). Resumable: a killed run continues from the checkpoint
folder when it is started again with the same settings.
"""

import json
import os
import shutil
import time
from dataclasses import asdict

import _common
import numpy as np
import pandas as pd

from cxr import serving, tracking
from cxr.data.loading import Augmentation, make_dataset_from_store
from cxr.data.prepare import open_store
from cxr.evaluation import choose_thresholds
from cxr.io import read_table, write_json, write_table
from cxr.labels import LABELS
from cxr.models import build, prior_logits, save_model, set_output_bias
from cxr.models.metadata import model_metadata, write_metadata
from cxr.models.registry import MODEL_NAMES, gradcam_layer
from cxr.params import Params, ParamsError
from cxr.training import runtime
from cxr.training.fit import TrainConfig, history_rows, train_two_phase, worker_checkpoint_dir
from cxr.training.losses import build_loss
from cxr.training.summary import train_summary


def main() -> None:
    parser = _common.paths(
        _common.parser(__doc__, models=MODEL_NAMES), split="the split table",
        store="the prepared image store",
        out="the model folder (model.keras, history.json, metadata.json)",
        metrics="the train metrics (JSON)", history="the per-epoch history (CSV, a DVC plot)",
        checkpoints="resume checkpoints (not a DVC output: removed once trained)")
    args, params = _common.start(parser)
    name, root = args.model, _common.dvc_root()
    if name not in params.models:
        raise SystemExit(f"params.yaml: no block models.{name}; add one (see params.yaml)")
    model_params = params.models[name]
    runtime.configure(params.seed, params.train.deterministic, params.train.mixed_precision,
                      params.train.precision_policy)

    table = read_table(args.split)
    train_rows, val_rows = table[table["split"] == "train"], table[table["split"] == "val"]
    pipe = params.pipeline
    store = open_store(args.store, image_size=pipe.image_size)
    # The store is small next to the GPU's appetite (50 MB per 1,000 images at 224 px): hold it
    # in memory, so batches are gathers, not page faults.
    images = np.asarray(store.images)
    common = dict(batch_size=pipe.batch_size, parallel_calls=pipe.parallel_calls,
                  prefetch=pipe.prefetch)
    train_store_rows = store.rows_for(train_rows["Image Index"])
    train_labels = train_rows[list(LABELS)].to_numpy()
    augmentation = Augmentation(**asdict(pipe.augment))

    def train_data(phase: int, epoch: int):
        """One epoch's batches, shuffled and augmented from (seed, phase, epoch) alone: a
        resumed run sees exactly the batches an uninterrupted one would have."""
        return make_dataset_from_store(images, train_store_rows, train_labels, training=True,
                                       augmentation=augmentation, seed=params.seed,
                                       epoch=(phase, epoch), **common)

    val_data = make_dataset_from_store(images, store.rows_for(val_rows["Image Index"]),
                                       val_rows[list(LABELS)].to_numpy(), **common)

    config = TrainConfig(**{k: v for k, v in asdict(model_params).items() if k != "options"},
                         jit_compile=params.train.jit_compile)
    fingerprint = {"model": name, "model_params": asdict(model_params),
                   "train": asdict(params.train), "loss": asdict(params.loss),
                   "pipeline": asdict(pipe), "seed": params.seed,
                   "split_rows": int(len(table)),
                   "split_checksum": int(pd.util.hash_pandas_object(table).sum() % 2**61)}

    with tracking.stage_run(f"train@{name}", root, params, model=name,
                            dvc_exp_name=_common.dvc_exp_name()) as run:
        strategy = runtime.distribution_strategy(params.train.strategy)
        with strategy.scope():
            model = build_model(name, params, args.params)
            if params.train.prior_bias and params.train.weights in ("none", "imagenet"):
                set_output_bias(model, prior_logits(train_rows[list(LABELS)].to_numpy()))
            loss = build_loss(params.loss.name, params.loss.alpha, params.loss.gamma,
                              train_labels=train_rows[list(LABELS)].to_numpy())

        def log_epoch(phase: str, row: dict) -> None:
            # row["step"] counts over both phases and survives a resume (the step axis of
            # an interrupted run's curves continues instead of restarting at 1)
            run.log_metrics({k: v for k, v in row.items() if k not in ("epoch", "step")},
                            step=row["step"])

        started = time.perf_counter()
        history = train_two_phase(model, train_data, val_data, loss, config, args.checkpoints,
                                  on_epoch=log_epoch, verbose=params.train.verbose,
                                  fingerprint=fingerprint, strategy=strategy,
                                  seed=params.seed)
        seconds = time.perf_counter() - started

        val_true = val_rows[list(LABELS)].to_numpy()
        val_scores = model.predict(val_data, verbose=0)
        summary = train_summary(name, history, val_true, val_scores, LABELS, seconds=seconds,
                                train_images=len(train_rows), parameters=model.count_params(),
                                mlflow_run_id=run.run_id)
        method = params.evaluate.threshold_method
        metadata = model_metadata(name, LABELS, pipe.image_size, gradcam_layer(name), method,
                                  choose_thresholds(val_true, val_scores, method))
        args.out.mkdir(parents=True, exist_ok=True)
        save_model(model, args.out / "model.keras")  # byte-reproducible: same weights, same hash
        (args.out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
        write_metadata(args.out, metadata)
        write_table(pd.DataFrame(history_rows(history)), args.history)
        write_json(summary, args.metrics)
        for path in (args.out / "history.json", args.out / "metadata.json", args.history):
            run.log_artifact(path)
        # The model as an MLflow model (runs:/RUN_ID/model): servable with `mlflow models`.
        serving.log_model(model, LABELS, np.asarray(next(iter(val_data))[0])[:1])
        run.log_metrics({"val_macro_auc_sklearn": summary["val_macro_auc"]})
    # finished: nothing left to resume (a multi-worker run's other workers: their own folder)
    shutil.rmtree(worker_checkpoint_dir(args.checkpoints, strategy), ignore_errors=True)
    epochs_run = sum(summary["epochs"].values())
    print(f"train@{name}: val macro AUC {summary['val_macro_auc']:.4f} after {epochs_run} epochs "
          f"in {seconds:.0f} s ({summary['train_images_per_second']} img/s)")


def build_model(name: str, params: Params, source: str | os.PathLike):
    """`build` with the model's params; its errors name the params keys they came from."""
    options = params.models[name].options
    try:
        return build(name, image_size=params.pipeline.image_size, weights=params.train.weights,
                     **options)
    except (TypeError, ValueError) as error:
        # The factory knows its arguments, not where they came from.
        raise ParamsError(
            f"{source}: models.{name}.options = {options!r} with train.weights = "
            f"{params.train.weights!r} and pipeline.image_size = "
            f"{params.pipeline.image_size}: {error}") from error


if __name__ == "__main__":
    main()
