"""The default DVC remote: push a pipeline's outputs, clone, pull, and nothing is left to run.

A tiny two-stage pipeline (make data, train) stands in for the real one (which trains networks
for minutes); what is tested is the project's `.dvc/config` and the DVC round trip: the clone
gets every output from the remote, and `dvc status` / `dvc repro` agree there is nothing to do.
The project's remote is a folder beside the repository (`../cxr-dvc-remote`), so the tiny
project and its clone sit side by side in one temporary folder, as a checkout and a colleague's
clone would on a shared disk.
"""

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DVC = shutil.which("dvc", path=str(BIN)) or shutil.which("dvc")

MAKE_DATA = """\
import pathlib
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/rows.csv").write_text("".join(f"{i},{i * i % 7}\\n" for i in range(100)))
"""
TRAIN = """\
import json, pathlib
rows = [line.split(",") for line in pathlib.Path("data/rows.csv").read_text().splitlines()]
weight = sum(int(y) for _, y in rows) / len(rows)
pathlib.Path("model").mkdir(exist_ok=True)
pathlib.Path("model/model.txt").write_text(f"weight={weight}\\n")
pathlib.Path("metrics.json").write_text(json.dumps({"weight": weight}))
"""
DVC_YAML = f"""\
stages:
  make_data:
    cmd: {sys.executable} make_data.py
    deps: [make_data.py]
    outs: [data]
  train:
    cmd: {sys.executable} train.py
    deps: [train.py, data]
    outs: [model]
    metrics:
      - metrics.json:
          cache: false
"""


def run(*command: str, cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_project_config_names_a_default_local_remote():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    name = config["core"]["remote"]
    # DVC writes the section name quoted: ['remote "local"']
    section = next(s for s in config.sections() if s.strip("'") == f'remote "{name}"')
    url = config[section]["url"]
    # relative to .dvc/: a folder beside the repository, outside git
    assert (ROOT / ".dvc" / url).resolve() == (ROOT.parent / "cxr-dvc-remote").resolve()


@pytest.mark.slow
@pytest.mark.skipif(DVC is None, reason="dvc is not installed next to the interpreter")
def test_push_clone_pull_leaves_nothing_to_reproduce(tmp_path):
    repo, clone = tmp_path / "cxr", tmp_path / "clone"
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run(DVC, "init", "-q", cwd=repo)
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")  # the project's remote
    (repo / "make_data.py").write_text(MAKE_DATA)
    (repo / "train.py").write_text(TRAIN)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(DVC, "repro", cwd=repo)
    run("git", "add", "-A", cwd=repo)
    run("git", "commit", "-q", "-m", "pipeline and its lock", cwd=repo)

    pushed = run(DVC, "push", cwd=repo)
    remote = tmp_path / "cxr-dvc-remote"
    assert remote.is_dir() and any(p.is_file() for p in remote.rglob("*")), pushed

    run("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    assert not (clone / "data").exists() and not (clone / "model").exists()
    pulled = run(DVC, "pull", cwd=clone)
    for output in ("data/rows.csv", "model/model.txt", "metrics.json"):
        assert (clone / output).read_bytes() == (repo / output).read_bytes(), pulled

    status = run(DVC, "status", cwd=clone)
    assert "Data and pipelines are up to date." in status, status
    repro = run(DVC, "repro", cwd=clone)
    assert "Running stage" not in repro, repro
    assert "Stage 'make_data' didn't change, skipping" in repro, repro
    assert "Stage 'train' didn't change, skipping" in repro, repro
    assert "Data and pipelines are up to date." in repro, repro
    print(pushed, pulled, status, repro, sep="\n")
