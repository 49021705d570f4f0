"""MLflow: one run per stage execution, with params, per-epoch metrics, artifacts and tags.

The default store is SQLite in the project root (MLflow's file store raises in 3.13+). The
root is passed in by the caller: under `dvc exp run --queue` the stage runs in a temporary
copy of the repo that is deleted afterwards, so the caller hands us DVC_ROOT, and a relative
URI would lose the run. A remote `http(s)://` server is checked before training starts: an
unreachable tracking server fails the stage at once, naming the URI, instead of losing the run
(or the hours of training before it) at the end.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MAX_PARAM_LENGTH = 6000
# MLflow 3's UI opens an experiment on the view its kind names; without this tag it guesses
# (GenAI traces for a new experiment) and the training runs are one click away.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingError(RuntimeError):
    """The tracking server cannot be used."""


def resolve_tracking_uri(configured: str, root: str | Path) -> str:
    """'' -> sqlite:///<root>/mlflow.db; a relative sqlite path is made absolute under root."""
    root = Path(root).resolve()
    if not configured:
        return f"sqlite:///{root / DEFAULT_DB}"
    if configured.startswith("sqlite:///") and not configured.startswith("sqlite:////"):
        relative = configured[len("sqlite:///"):]
        return f"sqlite:///{root / relative}"
    return configured


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError unless an http(s) tracking server answers its health check."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status != 200:
                raise TrackingError(f"MLflow tracking server {uri} answered {response.status} "
                                    f"to {url}")
    except (urllib.error.URLError, OSError) as error:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({error}); start it, or set "
            f"mlflow.tracking_uri to '' for the local SQLite store") from None


def git_commit(root: str | Path) -> str:
    """The commit of the code that ran ('unknown' outside a git checkout), '+dirty' if edited."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty.strip() else "")


def run_tags(stage: str, root: str | Path, data_source: str, dvc_exp_name: str = "",
             model: str | None = None) -> dict[str, str]:
    """The tags every stage's run carries: what ran, on which code, data and DVC experiment."""
    tags = {"stage": stage, "git_commit": git_commit(root), "dvc_exp_name": dvc_exp_name,
            "data_source": data_source}
    return tags if model is None else {"model": model, **tags}


class Run:
    """A thin handle on an active MLflow run."""

    def __init__(self, mlflow_module, run):
        self._mlflow = mlflow_module
        self.run_id: str = run.info.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.exists():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))


@contextlib.contextmanager
def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    artifact_root: str | Path,
) -> Iterator[Run]:
    """Open an MLflow run; a failure inside marks the run FAILED and re-raises."""
    check_reachable(tracking_uri)
    import mlflow  # imported late: ~2 s, and only the stages that track need it

    mlflow.set_tracking_uri(tracking_uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is None:
        location = None
        if not tracking_uri.startswith(("http://", "https://")):
            location = Path(artifact_root).resolve().as_uri()
        mlflow.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_TAGS)
    else:  # an experiment made before the tag existed, or by hand: tag it, keep other choices
        for key, value in EXPERIMENT_TAGS.items():
            if key not in existing.tags:
                mlflow.MlflowClient(tracking_uri).set_experiment_tag(
                    existing.experiment_id, key, value)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name, tags=dict(tags)) as active:
        mlflow.log_params({k: _param_value(v) for k, v in params.items()})
        yield Run(mlflow, active)


@contextlib.contextmanager
def stage_run(stage: str, root: str | Path, params, *, model: str | None = None,
              dvc_exp_name: str = "") -> Iterator[Run]:
    """The MLflow run of one stage execution: what every tracked stage opens on start.

    ``params`` is the loaded :class:`cxr.params.Params` (its ``mlflow`` block says where to log,
    all of it is logged flat); ``root`` is the project root where the default SQLite store and
    the artifacts live (the stage passes DVC_ROOT). The run is named ``stage`` and tagged with
    :func:`run_tags`.
    """
    from cxr.params import flatten

    uri = resolve_tracking_uri(params.mlflow.tracking_uri, root)
    tags = run_tags(stage, root, params.data.source, dvc_exp_name, model=model)
    with start_run(uri, params.mlflow.experiment, stage, flatten(params), tags,
                   Path(root) / ARTIFACTS_DIR) as run:
        yield run


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
