"""DVC stage `report`: compare every model -> reports/report.{md,html}, metrics/summary.json.

Reads what the split, train@MODEL, evaluate@MODEL and localize@MODEL stages wrote (a model
without localize results gets a note in the report); computes the paired
patient-bootstrap macro-AUC difference for every pair of models; logs the report to MLflow.
"""

import itertools
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from cxr import tracking
from cxr.evaluation import paired_bootstrap_macro_auc
from cxr.io import write_json
from cxr.labels import LABELS
from cxr.models import MODEL_NAMES
from cxr.params import flatten, load_params
from cxr.report import plots
from cxr.report.build import write_report

SPLIT, SPLIT_METRICS = "data/processed/split.csv", "metrics/split.json"
OUT_DIR, SUMMARY = Path("reports"), "metrics/summary.json"
ROOT = Path(os.environ.get("DVC_ROOT", "."))


def read_json(path: Path):
    return json.loads(path.read_text())


def main() -> None:
    params = load_params()
    names = [name for name in MODEL_NAMES if name in params.models]
    table = pd.read_csv(SPLIT, dtype={"path": str}, keep_default_na=False)
    test = table[table["split"] == "test"].set_index("Image Index")

    models, scores = {}, {}
    for name in names:
        plot_dir = Path("plots") / name
        evaluation = read_json(Path("metrics/eval") / f"{name}.json")
        evaluation["referral"]["curve"] = read_json(plot_dir / "referral.json")
        localize = Path("metrics/localize") / f"{name}.json"
        models[name] = {
            "eval": evaluation,
            "train": read_json(Path("metrics/train") / f"{name}.json"),
            "localize": read_json(localize) if localize.is_file() else None,
            "reliability": read_json(plot_dir / "reliability.json"),
            "figures": {kind: str(plot_dir / f"{kind}.png")
                        for kind in ("roc", "loss", "mc_histogram", "reliability")},
        }
        models[name]["figures"]["localize"] = str(plot_dir / "localize_examples.png")
        predictions = pd.read_csv(Path("predictions") / f"{name}.csv").set_index("Image Index")
        scores[name] = predictions.loc[test.index, [f"{label}_mean" for label in LABELS]]

    y_true, patients = test[list(LABELS)].to_numpy(), test["Patient ID"].to_numpy()
    comparisons = []
    for a, b in itertools.combinations(names, 2):
        paired = paired_bootstrap_macro_auc(y_true, scores[a].to_numpy(), scores[b].to_numpy(),
                                            patients, LABELS, n_boot=params.evaluate.n_boot,
                                            seed=params.seed, ci=params.evaluate.ci)
        comparisons.append({"a": a, "b": b, **paired})

    figure_dir = OUT_DIR / "figures"
    figures = {
        "referral": plots.referral_curves(
            {n: m["eval"]["referral"]["curve"] for n, m in models.items()},
            "Macro AUC on the cases kept after referring the most uncertain",
            figure_dir / "referral.png"),
        "reliability": plots.reliability_diagram(
            {n: m["reliability"] for n, m in models.items()},
            "Reliability of the MC-dropout mean (all findings pooled)",
            figure_dir / "reliability.png"),
        "auc_comparison": plots.auc_comparison(
            {n: m["eval"]["auc"] for n, m in models.items()}, figure_dir / "auc_comparison.png"),
    }
    run_ids = {f"train@{n}": m["train"].get("mlflow_run_id") for n, m in models.items()}
    run_ids.update({f"evaluate@{n}": m["eval"].get("mlflow_run_id") for n, m in models.items()})
    tags = tracking.run_tags("report", ROOT, params.data.source, os.environ.get("DVC_EXP_NAME", ""))
    context = {
        "title": "Chest X-ray classifiers: test-split comparison",
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"source": params.data.source, "split": read_json(Path(SPLIT_METRICS))},
        "models": models,
        "comparisons": comparisons,
        "figures": {k: str(v) for k, v in figures.items()},
        "provenance": {"git_commit": tags["git_commit"], "params": flatten(params),
                       "mlflow_run_ids": run_ids,
                       "dvc_exp_name": os.environ.get("DVC_EXP_NAME", "")},
    }
    md_path, html_path = write_report(context, OUT_DIR)

    best = max(names, key=lambda n: models[n]["eval"]["macro_auc"] or -1.0)
    summary = {
        "best_model": best,
        "models": {n: {"macro_auc": m["eval"]["macro_auc"],
                       "macro_auc_ci_low": m["eval"]["macro_auc_ci_low"],
                       "macro_auc_ci_high": m["eval"]["macro_auc_ci_high"],
                       "ece": m["eval"]["calibration"]["ece"],
                       "referral_gain_at_20": m["eval"]["referral"]["gain_at_20"],
                       "pointing_game": (m["localize"] or {}).get("overall", {}).get("pointing"),
                       "localization_iou": (m["localize"] or {}).get("overall", {})
                       .get("iou_mean"),
                       "auc": m["eval"]["auc"]} for n, m in models.items()},
        "comparisons": {f"{c['a']}_vs_{c['b']}": {k: c[k] for k in
                                                  ("difference", "ci_low", "ci_high", "p_value")}
                        for c in comparisons},
    }
    write_json(summary, SUMMARY)

    uri = tracking.resolve_tracking_uri(params.mlflow.tracking_uri, ROOT)
    with tracking.start_run(uri, params.mlflow.experiment, "report", flatten(params), tags,
                            ROOT / tracking.ARTIFACTS_DIR) as run:
        run.log_metrics({f"{n}_test_macro_auc": v["macro_auc"]
                         for n, v in summary["models"].items()})
        for path in (md_path, html_path, Path(SUMMARY), *figures.values()):
            run.log_artifact(path, "report")
    print(f"report: {html_path} ({len(names)} models; best {best}: "
          f"macro AUC {summary['models'][best]['macro_auc']:.4f})")


if __name__ == "__main__":
    main()
