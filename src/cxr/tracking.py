"""MLflow: one parent run per pipeline execution, one nested run per stage execution.

Each stage run carries params, per-epoch metrics, artifacts and tags, and is nested under the
*parent run* of its pipeline execution: the run tagged ``cxr.pipeline_key`` = HEAD commit +
DVC experiment name + params digest (:func:`pipeline_key`), found or created by the first
stage that runs (:func:`pipeline_parent`; why this key: docs/DESIGN.md, "MLflow runs").

The default store is SQLite in the project root (MLflow's file store raises in 3.13+). The
root is passed in by the caller: under `dvc exp run --queue` the stage runs in a temporary
copy of the repo that is deleted afterwards, so the caller hands us DVC_ROOT, and a relative
URI would lose the run. A remote `http(s)://` server is checked before training starts: an
unreachable tracking server fails the stage at once, naming the URI, instead of losing the run
(or the hours of training before it) at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: no cross-process lock there, only the oldest-wins rule
    fcntl = None

DEFAULT_DB = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
MAX_PARAM_LENGTH = 6000
# MLflow 3's UI opens an experiment on the view its kind names; without this tag it guesses
# (GenAI traces for a new experiment) and the training runs are one click away.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
PIPELINE_KEY_TAG = "cxr.pipeline_key"
ROLE_TAG = "cxr.role"  # "pipeline" on parent runs, "stage" on the stage runs nested under them
PARENT_RUN_TAG = "mlflow.parentRunId"
# SQLite allows one writer at a time: a write that meets another one's lock for longer than
# the driver's busy timeout fails with "database is locked"; these are retried.
LOCKED_RETRIES = 8


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


def head_commit(root: str | Path) -> str:
    """The commit HEAD names ('unknown' outside a git checkout), without a dirty marker."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def params_digest(params: Mapping[str, Any]) -> str:
    """12 hex digits of sha256 over the flat params (key order does not matter)."""
    text = json.dumps({str(k): _param_value(v) for k, v in params.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pipeline_key(commit: str, dvc_exp_name: str, digest: str) -> str:
    """``COMMIT/EXPERIMENT/PARAMS``: what the stages of one pipeline execution share.

    ``EXPERIMENT`` is the DVC experiment's name, or ``-`` outside ``dvc exp run``. Every stage
    process of one execution computes the same key (the dirty marker is left out: DVC rewrites
    the tracked dvc.lock and metrics between stages).
    """
    # A quote would end the search filter's string literal (git allows one in a ref name).
    return f"{commit}/{dvc_exp_name.replace(chr(39), '_') or '-'}/{digest}"


class Run:
    """A thin handle on an active MLflow run (and the pipeline run it is nested under)."""

    def __init__(self, mlflow_module, run, parent_run_id: str | None = None):
        self._mlflow = mlflow_module
        self.run_id: str = run.info.run_id
        self.parent_run_id = parent_run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        clean = _clean_metrics(metrics)
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def log_pipeline_metrics(self, metrics: Mapping[str, float]) -> None:
        """Log metrics on the parent (pipeline) run too, so runs can be compared there."""
        clean = _clean_metrics(metrics)
        if clean and self.parent_run_id is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._mlflow.MlflowClient().log_batch(
                self.parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in clean.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path=artifact_path)
        elif path.exists():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._mlflow.set_tags(dict(tags))

    def log_artifact_to_run(self, run_id: str | None, path: str | Path,
                            artifact_path: str | None = None) -> None:
        """Log a file into another run of the same store (e.g. the train run that holds the
        MLflow model, finished by now); nothing when ``run_id`` is None or the file is absent."""
        path = Path(path)
        if run_id and path.is_file():
            _retry_locked(lambda: self._mlflow.MlflowClient().log_artifact(
                run_id, str(path), artifact_path=artifact_path))


@contextlib.contextmanager
def start_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    artifact_root: str | Path,
    *,
    pipeline: str | None = None,
    pipeline_tags: Mapping[str, str] | None = None,
) -> Iterator[Run]:
    """Open an MLflow run; a failure inside marks the run FAILED and re-raises.

    With ``pipeline`` (a :func:`pipeline_key`), the run is nested under the pipeline's parent
    run, found or created here (:func:`pipeline_parent`, tagged with ``pipeline_tags``); the
    parent's status and end time then follow its latest stage run.
    """
    check_reachable(tracking_uri)
    import mlflow  # imported late: ~2 s, and only the stages that track need it

    mlflow.set_tracking_uri(tracking_uri)
    flat = {k: _param_value(v) for k, v in params.items()}
    parent_id = None
    with _store_lock(tracking_uri, experiment):
        # Inside the lock: the first client of an empty SQLite store creates its tables.
        client = _retry_locked(lambda: mlflow.MlflowClient(tracking_uri))
        experiment_id = _retry_locked(
            lambda: _ensure_experiment(client, tracking_uri, experiment, artifact_root))
        if pipeline is not None:
            parent_id = _retry_locked(lambda: pipeline_parent(
                client, experiment_id, pipeline, {**(pipeline_tags or {})}, flat))
            _retry_locked(lambda: client.update_run(parent_id, status="RUNNING"))
    run_tags = dict(tags) if parent_id is None else {**tags, ROLE_TAG: "stage"}
    active = _retry_locked(lambda: mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=run_tags, parent_run_id=parent_id))
    status = "FINISHED"
    try:
        mlflow.log_params(flat)
        yield Run(mlflow, active, parent_id)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status)
        if parent_id is not None:
            _retry_locked(lambda: client.set_terminated(parent_id, status))


def pipeline_parent(client, experiment_id: str, key: str, tags: Mapping[str, str],
                    params: Mapping[str, str]) -> str:
    """The id of the parent run tagged ``cxr.pipeline_key = key``; created if there is none.

    Callers on one machine hold :func:`_store_lock`, so only one of them creates it. Across
    machines two may still create one each at the same moment: after creating, the oldest
    parent of the key (by start time, then run id) wins and a newer one made here is deleted,
    so every stage of the execution ends up under the same parent.
    """
    found = _pipeline_parents(client, experiment_id, key)
    if found:
        return found[0].info.run_id
    name = tags.get("dvc_exp_name") or f"pipeline@{key.split('/')[0][:8]}"
    created = client.create_run(experiment_id, run_name=name,
                                tags={**tags, PIPELINE_KEY_TAG: key, ROLE_TAG: "pipeline"})
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params
        client.log_batch(created.info.run_id, params=items[start:start + 100])
    winner = _pipeline_parents(client, experiment_id, key)[0].info.run_id
    if winner != created.info.run_id:
        client.delete_run(created.info.run_id)
    return winner


def pipeline_runs(client, experiment_id: str, key: str) -> list:
    """Every stage run nested under the pipeline ``key``'s parent, oldest first."""
    parents = _pipeline_parents(client, experiment_id, key)
    if not parents:
        return []
    return client.search_runs(
        [experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parents[0].info.run_id}'",
        order_by=["attributes.start_time ASC"])


def _pipeline_parents(client, experiment_id: str, key: str) -> list:
    runs = client.search_runs([experiment_id], f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                              max_results=1000)
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def _ensure_experiment(client, tracking_uri: str, experiment: str, artifact_root) -> str:
    """The experiment's id, created (with :data:`EXPERIMENT_TAGS`) if it does not exist."""
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(experiment)
    if existing is None:
        location = None
        if not tracking_uri.startswith(("http://", "https://")):
            location = Path(artifact_root).resolve().as_uri()
        try:
            return client.create_experiment(experiment, artifact_location=location,
                                            tags=EXPERIMENT_TAGS)
        except MlflowException:  # created by another machine in between
            existing = client.get_experiment_by_name(experiment)
            if existing is None:
                raise
    # An experiment made before the tag existed, or by hand: tag it, keep other choices.
    for key, value in EXPERIMENT_TAGS.items():
        if key not in existing.tags:
            client.set_experiment_tag(existing.experiment_id, key, value)
    return existing.experiment_id


@contextlib.contextmanager
def _store_lock(tracking_uri: str, experiment: str) -> Iterator[None]:
    """Serialise experiment and parent-run creation among the processes of this machine.

    An exclusive ``flock`` on a file beside a SQLite store (so processes sharing the file share
    the lock), or in the temp dir for a server. Creating an empty SQLite store runs MLflow's
    schema migrations, which two processes must not do at once either.
    """
    if fcntl is None:
        yield
        return
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):]).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        digest = hashlib.sha256(f"{tracking_uri}|{experiment}".encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"cxr-mlflow-{digest}.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _retry_locked(call, retries: int = LOCKED_RETRIES, wait: float = 0.25):
    """``call()``, retried with a growing wait while SQLite answers 'database is locked'."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as error:
            if "database is locked" not in str(error) or attempt == retries:
                raise
            time.sleep(wait * 2 ** attempt)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def stage_run(stage: str, root: str | Path, params, *, model: str | None = None,
              dvc_exp_name: str = "") -> Iterator[Run]:
    """The MLflow run of one stage execution: what every tracked stage opens on start.

    ``params`` is the loaded :class:`cxr.params.Params` (its ``mlflow`` block says where to log,
    all of it is logged flat); ``root`` is the project root where the default SQLite store and
    the artifacts live (the stage passes DVC_ROOT). The run is named ``stage``, tagged with
    :func:`run_tags` and nested under the parent run of its pipeline execution (the key of
    :func:`pipeline_key` from HEAD, ``dvc_exp_name`` and the params).
    """
    from cxr.params import flatten

    uri = resolve_tracking_uri(params.mlflow.tracking_uri, root)
    flat = flatten(params)
    tags = run_tags(stage, root, params.data.source, dvc_exp_name, model=model)
    commit, digest = head_commit(root), params_digest(flat)
    parent_tags = {"git_commit": commit, "dvc_exp_name": dvc_exp_name,
                   "data_source": params.data.source, "cxr.params_digest": digest}
    with start_run(uri, params.mlflow.experiment, stage, flat, tags,
                   Path(root) / ARTIFACTS_DIR, pipeline=pipeline_key(commit, dvc_exp_name, digest),
                   pipeline_tags=parent_tags) as run:
        yield run


def _clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None}


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
