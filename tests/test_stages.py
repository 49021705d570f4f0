"""Smoke test of the stage scripts as DVC runs them: subprocesses that get every path as an
argument (as dvc.yaml's `cmd` passes them), in a temporary folder, on a tiny phantom dataset.

The data stages run for real (phantoms, ingest, sample, split); the report stage runs on
small metrics, predictions and curves built here from the split (training is covered by
tests/test_training.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxr.evaluation import evaluate, reliability_curve
from cxr.io import read_table, write_json, write_table
from cxr.labels import LABELS

REPO = Path(__file__).resolve().parents[1]
MODELS = ("simple_cnn", "densenet121")


def stage(workdir: Path, name: str, *args) -> str:
    """Run stages/NAME.py in workdir with the given arguments; its stdout."""
    env = {**os.environ, "DVC_ROOT": str(workdir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(REPO / "stages" / f"{name}.py"), *map(str, args)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"stage {name} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantoms"].update(n_patients=60, image_size=32, processes=1)
    params["evaluate"]["n_boot"] = 20
    params["models"] = {name: params["models"][name] for name in MODELS}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.mark.slow
def test_data_stages_chain_through_path_arguments(workdir):
    raw = Path("data/raw/phantoms")
    stage(workdir, "phantoms", "--out", raw)
    stage(workdir, "ingest", "--csv", raw / "Data_Entry_2017.csv", "--images", raw,
          "--out", "data/interim/labels.csv")
    stage(workdir, "sample", "--labels", "data/interim/labels.csv",
          "--out", "data/interim/sample.csv")
    stage(workdir, "split", "--sample", "data/interim/sample.csv",
          "--out", "data/processed/split.csv", "--metrics", "metrics/split.json",
          "--train-val-list", raw / "train_val_list.txt", "--test-list", raw / "test_list.txt")

    labels = read_table(workdir / "data/interim/labels.csv")
    sample = read_table(workdir / "data/interim/sample.csv")
    split = read_table(workdir / "data/processed/split.csv")
    assert len(labels) > len(sample) > 0 and sample["Patient ID"].nunique() == 30
    assert list(split.columns) == list(sample.columns) + ["split"]
    assert set(split["split"]) == {"train", "val", "test"}
    assert split.groupby("Patient ID")["split"].nunique().max() == 1  # no patient in two splits
    summary = json.loads((workdir / "metrics/split.json").read_text())
    assert summary  # written where the argument said

    stage(workdir, "prepare", "--sample", "data/interim/sample.csv", "--out", "data/prepared",
          "--metrics", "metrics/prepare.json")
    store = json.loads((workdir / "data/prepared/store.json").read_text())
    assert store["count"] == len(sample) and store["image_size"] == 64
    stage(workdir, "baseline", "--split", "data/processed/split.csv", "--store", "data/prepared",
          "--metrics", "metrics/baseline.json")
    baseline = json.loads((workdir / "metrics/baseline.json").read_text())
    assert set(baseline["auc"]) == set(LABELS)
    assert {"macro_auc", "macro_auc_ci_low", "macro_auc_ci_high"} <= set(baseline)


@pytest.mark.slow
def test_report_stage_reads_every_input_from_its_arguments(workdir):
    if not (workdir / "data/processed/split.csv").exists():
        pytest.fail("needs the data stages of the previous test")
    split = read_table(workdir / "data/processed/split.csv")
    test, val = split[split["split"] == "test"], split[split["split"] == "val"]
    rng = np.random.default_rng(0)
    for name in MODELS:
        y_test, y_val = test[list(LABELS)].to_numpy(), val[list(LABELS)].to_numpy()
        mean = np.clip(0.3 * y_test + rng.random(y_test.shape) * 0.7, 0, 1)
        std = rng.random(y_test.shape) * 0.2
        result = evaluate(y_test, mean, std, test["Patient ID"].to_numpy(), LABELS,
                          val_true=y_val, val_score=rng.random(y_val.shape), n_boot=20, seed=0)
        write_json(result["referral"].pop("curve"), workdir / "plots" / name / "referral.json")
        write_json(reliability_curve(y_test.ravel(), mean.ravel()),
                   workdir / "plots" / name / "reliability.json")
        write_json(result, workdir / "metrics/eval" / f"{name}.json")
        write_json({"model": name, "val_macro_auc": 0.6, "epochs": {"head": 1},
                    "mlflow_run_id": None}, workdir / "metrics/train" / f"{name}.json")
        predictions = pd.DataFrame({"Image Index": test["Image Index"].to_numpy()})
        for index, label in enumerate(LABELS):
            predictions[f"{label}_mean"] = mean[:, index]
            predictions[f"{label}_std"] = std[:, index]
        write_table(predictions, workdir / "predictions" / f"{name}.csv")
    (workdir / "metrics/localize").mkdir(parents=True, exist_ok=True)  # none: a note
    write_json({"images": len(split), "image_size": 64, "source_side_min": 32,
                "source_side_median": 32.0, "source_side_max": 32, "upsampled": len(split),
                "upsampled_fraction": 1.0, "non_square": 0}, workdir / "metrics/prepare.json")

    out = stage(workdir, "report", "--split", "data/processed/split.csv",
                "--split-metrics", "metrics/split.json", "--prepare-metrics", "metrics/prepare.json",
                "--train-metrics", "metrics/train",
                "--eval-metrics", "metrics/eval", "--localize-metrics", "metrics/localize",
                "--predictions", "predictions", "--baseline", "metrics/baseline.json",
                "--plots", "plots", "--out", "reports",
                "--summary", "metrics/summary.json", "--headline", "metrics/headline.json")
    assert "report:" in out
    summary = json.loads((workdir / "metrics/summary.json").read_text())
    assert set(summary["models"]) == set(MODELS)
    assert set(summary["comparisons"]) == {"simple_cnn_vs_densenet121"}
    controls = summary["models"]["simple_cnn"]["referral_controls"]
    assert controls["referred_images"] == int(np.floor(0.2 * len(test) + 0.5))
    assert -1 <= controls["std_probability_spearman"] <= 1
    baseline = json.loads((workdir / "metrics/baseline.json").read_text())
    assert summary["baseline"]["macro_auc"] == baseline["macro_auc"]
    headline = json.loads((workdir / "metrics/headline.json").read_text())
    assert set(headline) == {*MODELS, "baseline"}
    assert set(headline["simple_cnn"]) == {"macro_auc", "macro_auc_ci_low", "macro_auc_ci_high",
                                           "ece", "referral_gain_at_20", "pointing_game",
                                           "flat_heatmaps"}
    assert set(summary["baseline"]) == {"macro_auc", "macro_auc_ci_low", "macro_auc_ci_high",
                                        "auc"}
    markdown = (workdir / "reports/report.md").read_text()
    assert "Linear baseline" in markdown
    assert "### Why referral helps or not" in markdown
    assert "Simple CNN" in markdown and "DenseNet121" in markdown
    assert f"Prepare upsampled {len(split)} of {len(split)} image files" in markdown
    assert (workdir / "reports/report.html").read_text().startswith("<!DOCTYPE html>")
    assert (workdir / "reports/figures/auc_comparison.png").is_file()


def test_train_stage_names_the_params_keys_of_a_model_build_error(tmp_path, monkeypatch):
    import importlib.util

    from cxr.params import ParamsError, params_from_dict

    monkeypatch.syspath_prepend(str(REPO / "stages"))  # train.py imports _common
    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages" / "train.py")
    train_stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_stage)
    weights = tmp_path / "pretrained.weights.h5"
    weights.write_bytes(b"")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["weights"] = str(weights)
    raw["models"]["efficientnetb0"]["options"]["zero_init_residual"] = True
    with pytest.raises(ParamsError, match=(
            r"my-params\.yaml: models\.efficientnetb0\.options = \{.*'zero_init_residual': "
            r"True.*\} with train\.weights = '.*pretrained\.weights\.h5' and "
            r"pipeline\.image_size = 64: zero_init_residual is for random initialisation")):
        train_stage.build_model("efficientnetb0", params_from_dict(raw), "my-params.yaml")
    raw["models"]["simple_cnn"]["options"] = {"filters": 8}
    with pytest.raises(ParamsError, match=r"models\.simple_cnn\.options = \{'filters': 8\}.*"
                                          r"unknown option\(s\) \['filters'\]"):
        train_stage.build_model("simple_cnn", params_from_dict(raw), "my-params.yaml")
