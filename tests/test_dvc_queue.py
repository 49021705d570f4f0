"""Parallel experiments: two `dvc exp run --queue -S ...` runs of a tiny copy of this project,
started with `dvc queue start --jobs 2`, must both finish, appear in `dvc exp show --json` with
their headline macro AUC, and both reach the shared MLflow store (SQLite `mlflow.db` in the
project root, which both queue workers write at once) without "database is locked".

The baseline pipeline runs once first (`dvc repro`, committed), so each experiment reruns only
what its learning rate changes: train@simple_cnn, evaluate, localize, report."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = shutil.which("dvc", path=str(BIN))
RATES = {"lr-small": 0.0005, "lr-large": 0.003}


def run(*command: str, cwd: Path, timeout: float = 600, check: bool = True) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           # the stages of a queued experiment run in a copy of the project: its own src first
           "PYTHONPATH": os.pathsep.join(["src", os.environ.get("PYTHONPATH", "")]),
           "DVC_NO_ANALYTICS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    output = result.stdout + result.stderr
    assert not check or result.returncode == 0, f"{' '.join(command)}:\n{output[-5000:]}"
    return output


def tiny_project(root: Path) -> Path:
    """This project's pipeline, code and params, on 150 phantom patients at 32 px, one model."""
    project = root / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project / "dvc.yaml")
    for folder in ("stages", "src", "configs"):
        shutil.copytree(REPO / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantoms"].update(n_patients=150, image_size=32, processes=1)
    params["sample"]["patient_fraction"] = 1.0
    params["pipeline"]["image_size"] = 32
    params["prepare"]["processes"] = 1
    params["train"]["verbose"] = 0
    params["models"] = {"simple_cnn": {**params["models"]["simple_cnn"], "head_epochs": 2}}
    params["evaluate"]["n_boot"] = 20
    params["mc_dropout"]["passes"] = 5
    params["localize"].update(max_images=20, examples_per_finding=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (project / ".gitignore").write_text("/mlflow.db\n/mlartifacts\n/.checkpoints\n")
    return project


def queue_states(project: Path) -> dict[str, str]:
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    states = {}
    for line in run(DVC, "queue", "status", cwd=project).splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] in RATES:
            states[words[1]] = words[-1]
    return states


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(DVC is None, reason="dvc is not installed next to the interpreter")
def test_two_queued_experiments_run_in_parallel_and_both_reach_mlflow(tmp_path):
    project = tiny_project(tmp_path)
    run("git", "init", "-q", cwd=project)
    run(DVC, "init", "-q", cwd=project)
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", "tiny cxr", cwd=project)
    run(DVC, "repro", cwd=project, timeout=1200)
    run("git", "add", "-A", cwd=project)
    run("git", "commit", "-q", "-m", "baseline outputs", cwd=project)

    for name, rate in RATES.items():
        run(DVC, "exp", "run", "--queue", "--name", name,
            "-S", f"models.simple_cnn.head_learning_rate={rate}", cwd=project)
    started = time.monotonic()
    try:
        run(DVC, "queue", "start", "--jobs", "2", cwd=project)
        while True:
            states = queue_states(project)
            if len(states) == 2 and all(s in ("Success", "Failed") for s in states.values()):
                break
            assert time.monotonic() - started < 1200, f"queue still busy: {states}"
            time.sleep(5)
    finally:
        run(DVC, "queue", "stop", "--kill", cwd=project, check=False, timeout=120)
    print(f"queue: both experiments done in {time.monotonic() - started:.0f} s")
    logs = {name: run(DVC, "queue", "logs", name, cwd=project) for name in RATES}
    assert states == {name: "Success" for name in RATES}, {n: logs[n][-3000:] for n in RATES}
    for name, text in logs.items():
        assert "database is locked" not in text, f"{name}:\n{text[-3000:]}"
        assert "Running stage 'train@simple_cnn'" in text, text[-3000:]

    # What a user reads (pytest -s shows it): one row per experiment, headline columns.
    print(run(DVC, "exp", "show", "--only-changed", "--md", cwd=project))
    shown = json.loads(run(DVC, "exp", "show", "--json", cwd=project))
    aucs = {}
    for commit in shown:
        for experiment in commit.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                if revision.get("name") not in RATES:
                    continue
                data = revision["data"]
                headline = data["metrics"]["metrics/headline.json"]["data"]
                aucs[revision["name"]] = headline["simple_cnn"]["macro_auc"]
                rate = data["params"]["params.yaml"]["data"]["models"]["simple_cnn"]
                assert rate["head_learning_rate"] == RATES[revision["name"]]
    assert set(aucs) == set(RATES), shown
    assert all(0.0 <= auc <= 1.0 for auc in aucs.values()), aucs

    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute(
            "SELECT tags.value, runs.name, runs.status FROM runs JOIN tags "
            "ON tags.run_uuid = runs.run_uuid WHERE tags.key = 'dvc_exp_name'").fetchall()
    finished = {(exp, stage) for exp, stage, status in rows if status == "FINISHED"}
    for name in RATES:
        for stage in ("train@simple_cnn", "evaluate@simple_cnn", "report"):
            assert (name, stage) in finished, rows
