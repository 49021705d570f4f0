"""DVC stage `evaluate@MODEL`: Monte-Carlo dropout on the test split, metrics, plots.

Usage: python stages/evaluate.py MODEL
Writes metrics/eval/MODEL.json, predictions/MODEL.csv and plots/MODEL/ (ROC, loss curves,
MC histogram, reliability diagram as PNG; referral and reliability curves as JSON for
`dvc plots`); logs the run to MLflow.
"""

import argparse
import json
import os
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

import cxr.models  # noqa: F401  (registers the custom layers before loading)
from cxr import tracking
from cxr.data.loading import make_dataset
from cxr.evaluation import evaluate, reliability_curve
from cxr.evaluation.uncertainty import mc_dropout_predict, predictions_table
from cxr.io import write_json, write_table
from cxr.labels import LABELS
from cxr.models import MODEL_NAMES
from cxr.params import flatten, load_params
from cxr.report import plots
from cxr.training.fit import history_rows

SPLIT = "data/processed/split.csv"
ROOT = Path(os.environ.get("DVC_ROOT", "."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", choices=MODEL_NAMES)
    name = parser.parse_args().model
    params = load_params()
    mc, ev = params.mc_dropout, params.evaluate
    model_dir, plot_dir = Path("models") / name, Path("plots") / name
    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    image_size = int(model.input_shape[1])

    table = pd.read_csv(SPLIT, dtype={"path": str}, keep_default_na=False)
    test, val = table[table["split"] == "test"], table[table["split"] == "val"]
    started = time.perf_counter()

    def mc_predict(rows: pd.DataFrame, keep_samples: bool = False):
        data = make_dataset(rows["path"], None, image_size, ev.batch_size, cache="none",
                            parallel_calls=params.pipeline.parallel_calls)
        return mc_dropout_predict(model, data, passes=mc.passes, seed=params.seed,
                                  keep_samples=keep_samples)

    test_mc = mc_predict(test, keep_samples=True)
    val_mc = mc_predict(val)
    mc_seconds = time.perf_counter() - started

    y_test, y_val = test[list(LABELS)].to_numpy(), val[list(LABELS)].to_numpy()
    result = evaluate(y_test, test_mc.mean, test_mc.std, test["Patient ID"].to_numpy(), LABELS,
                      val_true=y_val, val_score=val_mc.mean, n_boot=ev.n_boot, seed=params.seed,
                      n_bins=ev.calibration_bins, threshold_method=ev.threshold_method, ci=ev.ci)
    referred = test_mc.refer(mc.threshold)
    result["mc_dropout"] = {
        "passes": mc.passes,
        "threshold": mc.threshold,
        "referred_images_fraction": float(referred.any(axis=1).mean()),
        "referred_findings_fraction": float(referred.mean()),
        "mean_std": float(test_mc.std.mean()),
        "seconds": round(mc_seconds, 2),
    }
    # Curves are plots, not metrics: `dvc metrics diff` shows scalars, `dvc plots` the curves.
    referral = result["referral"].pop("curve")
    reliability = reliability_curve(y_test.ravel(), test_mc.mean.ravel(), ev.calibration_bins)
    write_json(result, Path("metrics/eval") / f"{name}.json")
    write_json(referral, plot_dir / "referral.json")
    write_json(reliability, plot_dir / "reliability.json")
    write_table(predictions_table(test["Image Index"], test_mc, mc.threshold, LABELS),
                Path("predictions") / f"{name}.csv")

    history = json.loads((model_dir / "history.json").read_text())
    rows = history_rows(history)
    example = int(np.argmax(test_mc.std.max(axis=1)))  # the test image the model is least sure of
    figures = {
        "roc": plots.roc_curves(y_test, test_mc.mean, LABELS, f"{name}: test ROC (MC mean)",
                                plot_dir / "roc.png"),
        "loss": plots.loss_curves(rows, f"{name}: training history", plot_dir / "loss.png"),
        "mc_histogram": plots.mc_histogram(
            test_mc.samples[:, example], LABELS,
            f"{name}: {mc.passes} MC-dropout passes, {test['Image Index'].iloc[example]}",
            plot_dir / "mc_histogram.png"),
        "reliability": plots.reliability_diagram({name: reliability},
                                                 f"{name}: reliability (all findings pooled)",
                                                 plot_dir / "reliability.png"),
    }

    uri = tracking.resolve_tracking_uri(params.mlflow.tracking_uri, ROOT)
    tags = tracking.run_tags(f"evaluate@{name}", ROOT, params.data.source,
                             os.environ.get("DVC_EXP_NAME", ""), model=name)
    with tracking.start_run(uri, params.mlflow.experiment, f"evaluate@{name}", flatten(params),
                            tags, ROOT / tracking.ARTIFACTS_DIR) as run:
        run.log_metrics({"test_macro_auc": result["macro_auc"],
                         "test_macro_auc_ci_low": result["macro_auc_ci_low"],
                         "test_macro_auc_ci_high": result["macro_auc_ci_high"],
                         "test_ece": result["calibration"]["ece"],
                         "test_brier": result["calibration"]["brier"],
                         "referral_gain_at_20": result["referral"]["gain_at_20"],
                         **{f"test_auc_{k}": v for k, v in result["auc"].items()}})
        for path in figures.values():
            run.log_artifact(path, "plots")
        run.log_artifact(Path("metrics/eval") / f"{name}.json")
        run.log_artifact(Path("predictions") / f"{name}.csv")
        result["mlflow_run_id"] = run.run_id
    write_json(result, Path("metrics/eval") / f"{name}.json")
    ci = f"[{result['macro_auc_ci_low']:.3f}, {result['macro_auc_ci_high']:.3f}]"
    print(f"evaluate@{name}: test macro AUC {result['macro_auc']:.4f} {ci}, "
          f"ECE {result['calibration']['ece']:.4f}, referral gain at 20% "
          f"{result['referral']['gain_at_20']:+.4f}, MC dropout {mc_seconds:.1f} s")


if __name__ == "__main__":
    main()
