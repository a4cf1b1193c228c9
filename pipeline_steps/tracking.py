"""MLflow tracking: one experiment per dataset, one parent run per pipeline run, a child per stage.

Tracking URI: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` in the working
directory (the repo root for a normal run). The parent run id is kept in
``results/<dataset>/mlflow_parent_run.json``; ``python -m pipeline_steps.open_run`` creates a
fresh one before jobs fan out (Snakemake's ``onstart``), and a stage that finds none creates it
under a file lock, so concurrent jobs attach to the same parent.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline_steps.atomic import write_json
from pipeline_steps.layout import Layout

if TYPE_CHECKING:  # mlflow costs about 1 s of imports: only a process that logs pays it
    from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")

T = TypeVar("T")
DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


# SQLITE_BUSY/SQLITE_LOCKED read "database is locked" / "database table is locked", wrapped
# by SQLAlchemy and MLflow in several exception types: match the text.
LOCK_MARKERS = ("is locked",)


def retry(fn: Callable[[], T], attempts: int = 20, delay: float = 0.1, cap: float = 5.0) -> T:
    """Call ``fn``, retrying when the SQLite store is locked by another job.

    SQLite waits ``busy_timeout`` (MLflow sets 20 s per session) for a lock, but a deferred
    transaction that must upgrade from read to write fails at once with "database is locked";
    those are retried with capped exponential back-off and full jitter, so jobs that collided
    do not collide again in lock step. Other errors are raised at once.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - MLflow wraps sqlite errors in several types
            if not _is_lock_error(err) or attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0, min(cap, delay * 2**attempt)))
    raise AssertionError("unreachable")


def _is_lock_error(err: BaseException) -> bool:
    text = str(err).lower()
    return any(marker in text for marker in LOCK_MARKERS)


@functools.cache
def git_commit() -> str:
    """HEAD's commit (once per process), or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_CLIENTS: dict[str, MlflowClient] = {}


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def resolved_tracking_uri() -> str:
    """``tracking_uri()`` with a relative SQLite path made absolute (it follows the cwd)."""
    uri = tracking_uri()
    db = _sqlite_path(uri)
    if db is None:
        return uri
    return f"sqlite:///{db.resolve()}" + (uri[uri.index("?") :] if "?" in uri else "")


def client() -> MlflowClient:
    """The client of the tracking store, one per process and URI.

    On a SQLite store the first connection of each process holds a file lock
    (``<db>-init.lock`` beside the database) while MLflow creates or migrates the tables:
    without it, jobs that start together on a fresh store race in Alembic's migrations.
    No ``mlflow.set_tracking_uri`` here: it would export the absolute URI to the environment.
    """
    uri = resolved_tracking_uri()
    if uri in _CLIENTS:
        return _CLIENTS[uri]
    from mlflow.tracking import MlflowClient

    db = _sqlite_path(uri)
    if db is None:
        mc = MlflowClient(uri)
    else:
        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + "-init.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                mc = retry(lambda: MlflowClient(uri))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _CLIENTS[uri] = mc
    return mc


def experiment_id(params: dict, dataset: str) -> str:
    """Get or create the dataset's experiment, artifacts under ./mlartifacts (explicit)."""
    name = f"{params['run']['experiment_prefix']}-{dataset}"
    mc = client()
    exp = retry(lambda: mc.get_experiment_by_name(name))
    if exp is not None:
        return exp.experiment_id
    location = (Path("mlartifacts") / name).resolve().as_uri()
    try:
        return retry(lambda: mc.create_experiment(name, artifact_location=location))
    except Exception:  # another job created it in between
        exp = retry(lambda: mc.get_experiment_by_name(name))
        if exp is None:
            raise
        return exp.experiment_id


def _base_tags(params: dict, dataset: str) -> dict[str, str]:
    tags = {
        "dataset": dataset,
        "seed": str(params["run"]["seed"]),
        "git_commit": git_commit(),
        "mlflow.source.git.commit": git_commit(),
    }
    for env, tag in (
        ("DVC_EXP_NAME", "dvc_exp_name"),
        ("SLURM_JOB_ID", "slurm_job_id"),
        ("MTPKDOT_RULE", "snakemake_rule"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def open_parent_run(params: dict, dataset: str, layout: Layout) -> str:
    """Create a new parent run for this pipeline run and record its id."""
    mc = client()
    exp = experiment_id(params, dataset)
    run = retry(
        lambda: mc.create_run(exp, run_name=f"pipeline-{dataset}", tags=_base_tags(params, dataset))
    )
    write_json(layout.parent_run, {"run_id": run.info.run_id, "experiment_id": exp})
    return run.info.run_id


def _recorded_parent(layout: Layout):  # noqa: ANN202 - mlflow Run, imported lazily
    """The parent run recorded in ``layout.parent_run``, or None when there is none or its id
    is stale (another store)."""
    if not layout.parent_run.exists():
        return None
    run_id = json.loads(layout.parent_run.read_text())["run_id"]
    try:
        return retry(lambda: client().get_run(run_id))
    except Exception as err:  # noqa: BLE001 - stale id: treated as no parent
        if _is_lock_error(err):
            raise
        return None


def parent_run_id(params: dict, dataset: str, layout: Layout) -> str:
    """The current parent run, created under a file lock if no job made one yet; an ended
    pipeline run is not continued (a new parent is opened)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    lock_path = layout.root / ".mlflow_parent.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            run = _recorded_parent(layout)
            if run is not None and run.info.status == "RUNNING":
                return run.info.run_id
            return open_parent_run(params, dataset, layout)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def close_parent_run(layout: Layout, status: str = "FINISHED") -> str | None:
    """End the recorded parent run (``FINISHED`` or ``FAILED``, with its end time) if it is
    still running; returns its id, or None when there is none (nothing ran, or another store)."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"parent run status {status!r}: FINISHED, FAILED or KILLED")
    run = _recorded_parent(layout)
    if run is None:
        return None
    if run.info.status == "RUNNING":
        retry(lambda: client().set_terminated(run.info.run_id, status))
    return run.info.run_id


class StageRun:
    """A child run of one stage; logs params, per-epoch metrics and artifacts with retries."""

    def __init__(self, mc: MlflowClient, run_id: str) -> None:
        self.client = mc
        self.run_id = run_id

    def log_params(self, values: dict[str, Any], prefix: str = "") -> None:
        from mlflow.entities import Param

        flat = _flatten(values, prefix)
        items = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            retry(lambda chunk=items[i : i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step or 0) for k, v in values.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        retry(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


@contextlib.contextmanager
def stage_run(
    params: dict, dataset: str, layout: Layout, stage: str, **tags: Any
) -> Iterator[StageRun]:
    """A child run of the current parent run, tagged with stage and the given tags.

    The run ends FINISHED on success and FAILED if the stage raises.
    """
    mc = client()
    exp = experiment_id(params, dataset)
    parent = parent_run_id(params, dataset, layout)
    all_tags = {
        **_base_tags(params, dataset),
        "stage": stage,
        "mlflow.parentRunId": parent,
        **{k: str(v) for k, v in tags.items() if v is not None},
    }
    name = "-".join([stage, *[str(v) for v in tags.values() if v is not None]])
    run = retry(lambda: mc.create_run(exp, run_name=name, tags=all_tags))
    status = "FAILED"
    try:
        yield StageRun(mc, run.info.run_id)
        status = "FINISHED"
    finally:
        retry(lambda: mc.set_terminated(run.info.run_id, status=status))
