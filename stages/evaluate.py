"""DVC stage `evaluate@MODEL`: Monte-Carlo dropout on the test split, metrics, plots.

Usage: python stages/evaluate.py MODEL --split CSV --store STORE --model-dir DIR --metrics JSON
       --predictions CSV --plots DIR --train-metrics JSON --split-metrics JSON --card MD
Writes the eval metrics JSON (with the subgroup audit by sex, view and age band), the
predictions CSV, the model card (from this run's train, split and eval metrics) and, in the
plots folder, ROC, loss curves, MC histogram and reliability diagram as PNG, referral and
reliability curves as JSON for `dvc plots`; logs the run to MLflow, and the card also to the
train run that holds the MLflow model.
"""

import json
import time

import _common
import keras
import numpy as np
import pandas as pd

import cxr.models.layers  # noqa: F401  (registers the custom layers before loading)
from cxr import tracking
from cxr.data.loading import make_dataset_from_store
from cxr.data.prepare import open_store
from cxr.evaluation import evaluate, reliability_curve
from cxr.evaluation.subgroups import subgroup_audit, subgroup_columns, subgroup_log_metrics
from cxr.evaluation.summary import eval_log_metrics, mc_dropout_summary
from cxr.evaluation.uncertainty import mc_dropout_predict, predictions_table
from cxr.io import read_json, read_table, write_json, write_table
from cxr.labels import LABELS
from cxr.models.registry import MODEL_NAMES
from cxr.params import flatten
from cxr.progress import Progress, printer
from cxr.report import plots
from cxr.report.model_card import card_settings, model_card_markdown
from cxr.training.fit import history_rows


def main() -> None:
    parser = _common.paths(
        _common.parser(__doc__, models=MODEL_NAMES), split="the split table",
        store="the prepared image store", model_dir="the trained model's folder", metrics="the eval metrics (JSON)",
        predictions="per-image MC mean/std (CSV)", plots="the model's plots folder",
        train_metrics="the model's train metrics (JSON; for the card)",
        split_metrics="the split summary (JSON; for the card)",
        card="the model card to write (Markdown)")
    args, params = _common.start(parser)
    name, root = args.model, _common.dvc_root()
    mc, ev = params.mc_dropout, params.evaluate
    model = keras.models.load_model(args.model_dir / "model.keras", compile=False)
    image_size = int(model.input_shape[1])

    table = read_table(args.split)
    store = open_store(args.store, image_size=image_size)
    test, val = table[table["split"] == "test"], table[table["split"] == "val"]
    started = time.perf_counter()

    def mc_predict(rows: pd.DataFrame, split: str, keep_samples: bool = False):
        data = make_dataset_from_store(store.images, store.rows_for(rows["Image Index"]), None,
                                       ev.batch_size, parallel_calls=params.pipeline.parallel_calls)
        done = Progress(f"evaluate@{name}: MC dropout ({mc.passes} passes), {split}", len(rows))
        return mc_dropout_predict(model, data, passes=mc.passes, seed=params.seed,
                                  keep_samples=keep_samples, layers=mc.layers,
                                  progress=done.advance)

    test_mc = mc_predict(test, "test", keep_samples=True)
    val_mc = mc_predict(val, "val")
    mc_seconds = time.perf_counter() - started
    printer(f"evaluate@{name}: metrics, {ev.n_boot} patient-bootstrap resamples")

    y_test, y_val = test[list(LABELS)].to_numpy(), val[list(LABELS)].to_numpy()
    result = evaluate(y_test, test_mc.mean, test_mc.std, test["Patient ID"].to_numpy(), LABELS,
                      val_true=y_val, val_score=val_mc.mean, n_boot=ev.n_boot, seed=params.seed,
                      n_bins=ev.calibration_bins, threshold_method=ev.threshold_method, ci=ev.ci)
    result["mc_dropout"] = mc_dropout_summary(test_mc.std, test_mc.refer(mc.threshold),
                                              passes=mc.passes, threshold=mc.threshold,
                                              seconds=mc_seconds)
    audit_started = time.perf_counter()
    sub = ev.subgroups
    result["subgroups"] = subgroup_audit(
        y_test, test_mc.mean, test["Patient ID"].to_numpy(),
        subgroup_columns(test, sub.age_edges), [result["threshold"][label] for label in LABELS],
        LABELS, min_images=sub.min_images, min_positives=sub.min_positives, n_boot=ev.n_boot,
        seed=params.seed, ci=ev.ci, age_edges=sub.age_edges)
    # Recorded per run: the audit must stay a small share (< 5%) of the stage's time.
    result["subgroups"]["seconds"] = round(time.perf_counter() - audit_started, 2)
    # Curves are plots, not metrics: `dvc metrics diff` shows scalars, `dvc plots` the curves.
    referral = result["referral"].pop("curve")
    reliability = reliability_curve(y_test.ravel(), test_mc.mean.ravel(), ev.calibration_bins)
    write_json(result, args.metrics)
    write_json(referral, args.plots / "referral.json")
    write_json(reliability, args.plots / "reliability.json")
    write_table(predictions_table(test["Image Index"], test_mc, mc.threshold, LABELS),
                args.predictions)

    printer(f"evaluate@{name}: plots, {time.perf_counter() - started:.0f} s")
    history = json.loads((args.model_dir / "history.json").read_text())
    rows = history_rows(history)
    example = int(np.argmax(test_mc.std.max(axis=1)))  # the test image the model is least sure of
    figures = {
        "roc": plots.roc_curves(y_test, test_mc.mean, LABELS, f"{name}: test ROC (MC mean)",
                                args.plots / "roc.png"),
        "loss": plots.loss_curves(rows, f"{name}: training history", args.plots / "loss.png"),
        "mc_histogram": plots.mc_histogram(
            test_mc.samples[:, example], LABELS,
            f"{name}: {mc.passes} MC-dropout passes, {test['Image Index'].iloc[example]}",
            args.plots / "mc_histogram.png"),
        "reliability": plots.reliability_diagram({name: reliability},
                                                 f"{name}: reliability (all findings pooled)",
                                                 args.plots / "reliability.png"),
    }

    train = read_json(args.train_metrics)
    args.card.parent.mkdir(parents=True, exist_ok=True)
    args.card.write_text(model_card_markdown(
        name, evaluation=result, train=train, split=read_json(args.split_metrics),
        settings=card_settings(flatten(params), name)), encoding="utf-8")

    with tracking.stage_run(f"evaluate@{name}", root, params, model=name,
                            dvc_exp_name=_common.dvc_exp_name()) as run:
        run.log_metrics({**eval_log_metrics(result), **subgroup_log_metrics(result["subgroups"])})
        for path in figures.values():
            run.log_artifact(path, "plots")
        run.log_artifact(args.metrics)
        run.log_artifact(args.predictions)
        run.log_artifact(args.card, "model_card")
        # Beside the MLflow model (runs:/TRAIN_RUN/model), so the card travels with it.
        run.log_artifact_to_run(train.get("mlflow_run_id"), args.card, "model_card")
        result["mlflow_run_id"] = run.run_id
    write_json(result, args.metrics)
    ci = f"[{result['macro_auc_ci_low']:.3f}, {result['macro_auc_ci_high']:.3f}]"
    print(f"evaluate@{name}: test macro AUC {result['macro_auc']:.4f} {ci}, "
          f"ECE {result['calibration']['ece']:.4f}, referral gain at 20% "
          f"{result['referral']['gain_at_20']:+.4f}, MC dropout {mc_seconds:.1f} s")


if __name__ == "__main__":
    main()
