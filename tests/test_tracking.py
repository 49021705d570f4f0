"""MLflow tracking: URI resolution, fail-fast on an unreachable server, a real server round trip."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from train_configs import train_config

from cxr import tracking
from cxr.models import build
from cxr.training.fit import train_two_phase
from cxr.training.losses import build_loss


def test_default_uri_is_sqlite_under_the_given_root(tmp_path):
    assert tracking.resolve_tracking_uri("", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///runs/x.db", tmp_path) == \
        f"sqlite:///{tmp_path.resolve()}/runs/x.db"
    assert tracking.resolve_tracking_uri("http://host:5000", tmp_path) == "http://host:5000"


def test_experiment_is_tagged_for_the_model_training_view(tmp_path):
    """mlflow ui (3.x) opens an experiment on the runs only if its kind says model training."""
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_tracking_uri("", tmp_path)
    with tracking.start_run(uri, "new", "run", {}, {}, tmp_path / "artifacts"):
        pass
    client = MlflowClient(uri)
    new = client.get_experiment_by_name("new")
    assert new.tags["mlflow.experimentKind"] == "custom_model_development"

    old_id = client.create_experiment("old")  # made before the tag existed
    client.set_experiment_tag(old_id, "team", "cxr")
    with tracking.start_run(uri, "old", "run", {}, {}, tmp_path / "artifacts"):
        pass
    tags = client.get_experiment(old_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["team"] == "cxr"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    with pytest.raises(tracking.TrackingError, match=f"{uri} is unreachable"), \
            tracking.start_run(uri, "x", "run", {}, {}, tmp_path):
        pass
    assert time.perf_counter() - started < 10


def test_local_sqlite_run_records_params_metrics_artifacts(tmp_path):
    uri = tracking.resolve_tracking_uri("", tmp_path)
    artifact = tmp_path / "history.json"
    artifact.write_text("{}")
    with tracking.start_run(uri, "exp", "train@x", {"a.b": 1}, {"model": "x"},
                            tmp_path / "artifacts") as run:
        run.log_metrics({"val_auc": 0.7, "skipped": None}, step=1)
        run.log_artifact(artifact)
    from mlflow.tracking import MlflowClient

    stored = MlflowClient(uri).get_run(run.run_id)
    assert stored.data.params == {"a.b": "1"}
    assert stored.data.metrics == {"val_auc": 0.7}
    assert stored.data.tags["model"] == "x"
    assert stored.info.status == "FINISHED"
    assert (tmp_path / "artifacts").exists()


@pytest.mark.slow
def test_tiny_training_logged_to_a_real_mlflow_server(tmp_path):
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                tracking.check_reachable(uri, timeout=2)
                break
            except tracking.TrackingError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(server.stderr.read().decode()[-2000:]) from None
                time.sleep(1)

        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
        y = rng.integers(0, 2, (16, 14)).astype(np.float32)
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        model = build("simple_cnn", image_size=32)
        with tracking.start_run(uri, "server-test", "train@simple_cnn", {"seed": 1},
                                {"model": "simple_cnn"}, tmp_path) as run:
            history = train_two_phase(
                model, data, data, build_loss("focal"), train_config(head_epochs=2,
                                                                    finetune_epochs=0),
                tmp_path / "ckpt", verbose=0,
                on_epoch=lambda phase, row: run.log_metrics(
                    {k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"]))
            (tmp_path / "history.json").write_text(json.dumps(history))
            run.log_artifact(tmp_path / "history.json")

        def rest(path):
            with urllib.request.urlopen(f"{uri}/api/2.0/mlflow/{path}", timeout=10) as answer:
                return json.load(answer)

        stored = rest(f"runs/get?run_id={run.run_id}")["run"]
        assert stored["info"]["status"] == "FINISHED"
        assert {"key": "seed", "value": "1"} in stored["data"]["params"]
        steps = rest(f"metrics/get-history?run_id={run.run_id}&metric_key=val_loss")["metrics"]
        assert sorted(m["step"] for m in steps) == [1, 2]
        files = rest(f"artifacts/list?run_id={run.run_id}")["files"]
        assert [f["path"] for f in files] == ["history.json"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_run_tags_name_stage_commit_data_and_model(tmp_path):
    tags = tracking.run_tags("train@fusion", tmp_path, "phantoms", "exp-1", model="fusion")
    assert tags == {"model": "fusion", "stage": "train@fusion", "git_commit": "unknown",
                    "dvc_exp_name": "exp-1", "data_source": "phantoms"}
    assert "model" not in tracking.run_tags("report", tmp_path, "nih")


def _stage(uri, tmp_path, name, key, tags=None, fail=False):
    """One stage-like run nested under the pipeline ``key``; raises inside when ``fail``."""
    with tracking.start_run(uri, "exp", name, {"seed": 1}, {"stage": name},
                            tmp_path / "artifacts", pipeline=key,
                            pipeline_tags=tags or {"dvc_exp_name": ""}) as run:
        run.log_metrics({"m": 1.0})
        if fail:
            raise RuntimeError("stage failed")
    return run


def test_stage_runs_of_one_key_share_one_parent_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_tracking_uri("", tmp_path)
    key = tracking.pipeline_key("abc123", "", "d1")
    first, second = (_stage(uri, tmp_path, name, key) for name in ("train@x", "evaluate@x"))
    other = _stage(uri, tmp_path, "train@x", tracking.pipeline_key("abc123", "exp-2", "d1"),
                   {"dvc_exp_name": "exp-2"})
    assert first.parent_run_id == second.parent_run_id != other.parent_run_id

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("exp").experiment_id
    parents = client.search_runs([experiment], "tags.`cxr.role` = 'pipeline'")
    assert len(parents) == 2
    parent = client.get_run(first.parent_run_id)
    assert parent.data.tags["cxr.pipeline_key"] == "abc123/-/d1"
    assert parent.data.params == {"seed": "1"} and parent.info.status == "FINISHED"
    assert client.get_run(other.parent_run_id).info.run_name == "exp-2"
    nested = tracking.pipeline_runs(client, experiment, key)
    assert [run.info.run_id for run in nested] == [first.run_id, second.run_id]
    assert all(run.data.tags["cxr.role"] == "stage" for run in nested)

    with pytest.raises(RuntimeError, match="stage failed"):
        _stage(uri, tmp_path, "localize@x", key, fail=True)
    assert client.get_run(first.parent_run_id).info.status == "FAILED"
    assert len(tracking.pipeline_runs(client, experiment, key)) == 3


def test_pipeline_key_is_commit_experiment_and_params(tmp_path):
    digest = tracking.params_digest({"a": 1, "b": "x"})
    assert digest == tracking.params_digest({"b": "x", "a": 1}) != tracking.params_digest(
        {"a": 2, "b": "x"})
    assert tracking.pipeline_key("abc", "", digest) == f"abc/-/{digest}"
    assert tracking.pipeline_key("abc", "exp-1", digest) == f"abc/exp-1/{digest}"
    assert tracking.pipeline_key("abc", "it's", digest) == f"abc/it_s/{digest}"
    assert tracking.head_commit(tmp_path) == "unknown"


_RACER = """
import sys, time, pathlib
from cxr import tracking
uri, barrier = sys.argv[1], pathlib.Path(sys.argv[2])
import mlflow  # before the barrier: the racers then meet at the store, not at the import
(barrier / sys.argv[4]).touch()
while len(list(barrier.iterdir())) < 3:
    time.sleep(0.005)
with tracking.start_run(uri, "race", "train@x", {"seed": 1}, {}, sys.argv[3],
                        pipeline="c/-/d", pipeline_tags={}) as run:
    pass
print(run.parent_run_id)
"""


@pytest.mark.slow
def test_concurrent_stages_on_a_new_store_create_one_parent(tmp_path):
    """Three stage processes start at the same instant (a file barrier) on an empty SQLite
    store, like queue workers of `dvc exp run`: no lock error, one parent, three runs under it."""
    from mlflow.tracking import MlflowClient

    uri = tracking.resolve_tracking_uri("", tmp_path)
    script = tmp_path / "racer.py"
    script.write_text(_RACER)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [subprocess.Popen([sys.executable, str(script), uri, str(barrier),
                                str(tmp_path / "artifacts"), str(index)], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
              for index in range(3)]
    answers = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-1500:] for _, err in answers]
    parents = {out.strip() for out, _ in answers}
    assert len(parents) == 1
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("race").experiment_id
    assert len(client.search_runs([experiment], "tags.`cxr.role` = 'pipeline'")) == 1
    assert len(tracking.pipeline_runs(client, experiment, "c/-/d")) == 3
