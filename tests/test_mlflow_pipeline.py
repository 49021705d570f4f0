"""The tracked stages of a tiny pipeline against a real `mlflow server`: one parent run for the
execution, every stage run nested under it, with its metrics and the trained model."""

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_stages import REPO, stage
from test_tracking import free_port

from cxr import tracking

MODEL = "simple_cnn"


@pytest.fixture
def server(tmp_path):
    """A function that waits for a fresh server (SQLite + proxied artifacts in tmp_path) and
    returns its URI, http://127.0.0.1:PORT: the server starts while the test prepares data."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def ready() -> str:
        deadline = time.time() + 120
        while True:
            try:
                tracking.check_reachable(uri, timeout=2)
                return uri
            except tracking.TrackingError:
                if process.poll() is not None or time.time() > deadline:
                    raise RuntimeError(process.stderr.read().decode()[-2000:]) from None
                time.sleep(0.5)

    try:
        yield ready
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@pytest.mark.slow
def test_pipeline_stages_nest_under_one_parent_on_a_server(tmp_path, server, monkeypatch):
    from mlflow.tracking import MlflowClient

    workdir = tmp_path / "project"
    workdir.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantoms"].update(n_patients=80, image_size=32, processes=1)
    params["pipeline"]["image_size"] = 32
    params["models"] = {MODEL: {**params["models"][MODEL], "head_epochs": 1}}
    params["mc_dropout"]["passes"] = 3
    params["evaluate"]["n_boot"] = 10
    params["localize"]["max_images"] = 8
    params["train"]["verbose"] = 0
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("DVC_EXP_NAME", "tiny-exp")

    raw = Path("data/raw/phantoms")
    split, store = "data/processed/split.csv", "data/prepared"
    for name, *args in [
        ("phantoms", "--out", raw),
        ("ingest", "--csv", raw / "Data_Entry_2017.csv", "--images", raw,
         "--out", "data/interim/labels.csv"),
        ("sample", "--labels", "data/interim/labels.csv", "--out", "data/interim/sample.csv"),
        ("split", "--sample", "data/interim/sample.csv", "--out", split,
         "--metrics", "metrics/split.json", "--train-val-list", raw / "train_val_list.txt",
         "--test-list", raw / "test_list.txt"),
        ("prepare", "--sample", "data/interim/sample.csv", "--out", store, "--metrics",
         "metrics/prepare.json"),
        ("baseline", "--split", split, "--store", store, "--metrics", "metrics/baseline.json"),
    ]:
        stage(workdir, name, *args)
    uri = server()
    params["mlflow"] = {"tracking_uri": uri, "experiment": "cxr-test"}
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    logs = {"train": stage(workdir, "train", MODEL, "--split", split, "--store", store,
                           "--out", f"models/{MODEL}", "--metrics",
                           f"metrics/train/{MODEL}.json", "--history",
                           f"plots/{MODEL}/train_history.csv",
                           "--checkpoints", f".checkpoints/{MODEL}")}
    # evaluate and localize at once, as two DVC queue workers could run them
    with ThreadPoolExecutor(2) as pool:
        evaluate = pool.submit(stage, workdir, "evaluate", MODEL, "--split", split,
                               "--store", store, "--model-dir", f"models/{MODEL}",
                               "--metrics", f"metrics/eval/{MODEL}.json",
                               "--predictions", f"predictions/{MODEL}.csv",
                               "--plots", f"plots/{MODEL}",
                               "--train-metrics", f"metrics/train/{MODEL}.json",
                               "--split-metrics", "metrics/split.json",
                               "--card", f"models/{MODEL}/MODEL_CARD.md")
        localize = pool.submit(stage, workdir, "localize", MODEL, "--split", split,
                               "--store", store, "--model-dir", f"models/{MODEL}",
                               "--bbox", raw / "BBox_List_2017.csv",
                               "--metrics", f"metrics/localize/{MODEL}.json",
                               "--examples", f"plots/{MODEL}/localize_examples.png")
        logs.update(evaluate=evaluate.result(), localize=localize.result())
    logs.update({
        "report": stage(workdir, "report", "--split", split, "--split-metrics",
                        "metrics/split.json", "--prepare-metrics", "metrics/prepare.json",
                        "--train-metrics", "metrics/train",
                        "--eval-metrics", "metrics/eval", "--localize-metrics",
                        "metrics/localize", "--predictions", "predictions",
                        "--baseline", "metrics/baseline.json", "--plots", "plots",
                        "--out", "reports", "--summary", "metrics/summary.json",
                        "--headline", "metrics/headline.json"),
    })
    # progress as plain log lines, no carriage returns
    assert f"evaluate@{MODEL}: MC dropout (3 passes), test" in logs["evaluate"]
    assert f"localize@{MODEL}: Grad-CAM" in logs["localize"]
    assert "report: figures embedded in the HTML" in logs["report"]
    assert not any("\r" in log for log in logs.values())

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("cxr-test")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    parents = client.search_runs([experiment.experiment_id], "tags.`cxr.role` = 'pipeline'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "tiny-exp"
    assert parent.data.tags["cxr.pipeline_key"].split("/")[:2] == ["unknown", "tiny-exp"]
    assert parent.data.params["models.simple_cnn.head_epochs"] == "1"
    assert parent.data.metrics[f"{MODEL}_test_macro_auc"] > 0  # the headline, on the parent

    children = client.search_runs([experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_stage = {run.info.run_name: run for run in children}
    assert sorted(by_stage) == sorted([f"train@{MODEL}", f"evaluate@{MODEL}",
                                       f"localize@{MODEL}", "report"])
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert "val_loss" in by_stage[f"train@{MODEL}"].data.metrics
    assert "test_macro_auc" in by_stage[f"evaluate@{MODEL}"].data.metrics
    localize = by_stage[f"localize@{MODEL}"].data.metrics
    assert {"pointing_game", "iou_mean", "flat_heatmaps", "boxes_scored"} <= set(localize)
    assert localize["boxes_scored"] > 0
    assert f"{MODEL}_test_pointing_game" in by_stage["report"].data.metrics

    import mlflow

    mlflow.set_tracking_uri(uri)
    models = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], output_format="list",
        filter_string=f"source_run_id = '{by_stage[f'train@{MODEL}'].info.run_id}'")
    assert [m.name for m in models] == ["model"]
