"""DVC stage `report`: compare every model -> report.{md,html} and the summary metrics.

Reads what the split, baseline, train@MODEL, evaluate@MODEL and localize@MODEL stages wrote (a model
without localize results gets a note in the report); computes the paired
patient-bootstrap macro-AUC difference for every pair of models; logs the report to MLflow.
Per-model files are NAME.json / NAME.csv inside the folders given.
"""

from datetime import UTC, datetime

import _common

from cxr import tracking
from cxr.io import read_json, read_table, write_json
from cxr.labels import LABELS
from cxr.models.registry import MODEL_NAMES
from cxr.params import flatten
from cxr.progress import printer
from cxr.report import plots
from cxr.report.build import write_report
from cxr.report.comparability import study_comparability
from cxr.report.subgroups import subgroup_figure
from cxr.report.summary import compare_models, headline_metrics, summary_metrics
from cxr.report.uncertainty import referral_controls


def main() -> None:
    parser = _common.paths(
        _common.parser(__doc__), split="the split table", split_metrics="the split summary",
        prepare_metrics="the prepare metrics (files' sizes, upsampling)",
        train_metrics="folder of train metrics", eval_metrics="folder of eval metrics",
        localize_metrics="folder of localize metrics", predictions="folder of predictions",
        baseline="the linear baseline's metrics (JSON)",
        plots="folder of per-model plot folders", out="the report folder",
        summary="the summary metrics (JSON)",
        headline="the headline metrics (JSON): what `dvc exp show` lists")
    args, params = _common.start(parser)
    root = _common.dvc_root()
    names = [name for name in MODEL_NAMES if name in params.models]
    table = read_table(args.split)
    test = table[table["split"] == "test"].set_index("Image Index")

    models, scores = {}, {}
    for name in names:
        plot_dir = args.plots / name
        evaluation = read_json(args.eval_metrics / f"{name}.json")
        evaluation["referral"]["curve"] = read_json(plot_dir / "referral.json")
        localize = args.localize_metrics / f"{name}.json"
        models[name] = {
            "eval": evaluation,
            "train": read_json(args.train_metrics / f"{name}.json"),
            "localize": read_json(localize) if localize.is_file() else None,
            "reliability": read_json(plot_dir / "reliability.json"),
            "figures": {kind: str(plot_dir / f"{kind}.png")
                        for kind in ("roc", "loss", "mc_histogram", "reliability")},
        }
        models[name]["figures"]["localize"] = str(plot_dir / "localize_examples.png")
        predictions = read_table(args.predictions / f"{name}.csv").set_index("Image Index")
        scores[name] = predictions.loc[test.index,
                                       [f"{label}_mean" for label in LABELS]].to_numpy()
        spread = predictions.loc[test.index, [f"{label}_std" for label in LABELS]].to_numpy()
        thresholds = [evaluation["threshold"][label] for label in LABELS]
        models[name]["referral_controls"] = referral_controls(
            test[list(LABELS)].to_numpy(), scores[name], spread, thresholds, LABELS,
            seed=params.seed)

    comparisons = compare_models(scores, test[list(LABELS)].to_numpy(),
                                 test["Patient ID"].to_numpy(), LABELS,
                                 n_boot=params.evaluate.n_boot, seed=params.seed,
                                 ci=params.evaluate.ci, progress=printer)
    figure_dir = args.out / "figures"
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
    audits = {n: m["eval"]["subgroups"] for n, m in models.items() if "subgroups" in m["eval"]}
    if audits:  # without any, the report's subgroup section says so
        figures["subgroups"] = subgroup_figure(audits, figure_dir / "subgroups.png")
    run_ids = {f"train@{n}": m["train"].get("mlflow_run_id") for n, m in models.items()}
    run_ids.update({f"evaluate@{n}": m["eval"].get("mlflow_run_id") for n, m in models.items()})
    run_ids.update({f"localize@{n}": m["localize"].get("mlflow_run_id")
                    for n, m in models.items() if m["localize"]})
    baseline = read_json(args.baseline)
    split_metrics, prepared = read_json(args.split_metrics), read_json(args.prepare_metrics)
    context = {
        "title": "Chest X-ray classifiers: test-split comparison",
        "baseline": baseline,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"source": params.data.source, "split": split_metrics, "prepare": prepared,
                 "comparability": study_comparability(
                     params.data.source, split_metrics.get("images"),
                     params.pipeline.image_size, params.train.weights,
                     {n: params.models[n].head_epochs + params.models[n].finetune_epochs
                      for n in names}, prepared.get("upsampled"))},
        "models": models,
        "comparisons": comparisons,
        "figures": {k: str(v) for k, v in figures.items()},
        "provenance": {"git_commit": tracking.git_commit(root), "params": flatten(params),
                       "mlflow_run_ids": run_ids, "dvc_exp_name": _common.dvc_exp_name()},
    }
    md_path, html_path = write_report(context, args.out, progress=printer)
    summary = summary_metrics(models, comparisons, baseline)
    write_json(summary, args.summary)
    write_json(headline_metrics(summary), args.headline)

    with tracking.stage_run("report", root, params, dvc_exp_name=_common.dvc_exp_name()) as run:
        headline = {f"{n}_test_{key}": value for n, metrics in headline_metrics(summary).items()
                    for key, value in metrics.items()}
        run.log_metrics(headline)
        run.log_pipeline_metrics(headline)  # the parent run then answers "which was best"
        for path in (md_path, html_path, args.summary, *figures.values()):
            run.log_artifact(path, "report")
    best = summary["best_model"]
    print(f"report: {html_path} ({len(names)} models; best {best}: "
          f"macro AUC {summary['models'][best]['macro_auc']:.4f})")


if __name__ == "__main__":
    main()
