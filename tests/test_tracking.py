"""MLflow tracking under concurrency: 8 stage processes share the default SQLite store."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

N_PROCS = 8
N_EPOCHS = 10
KEYS = ("train_loss", "train_task", "train_ot", "val_loss", "val_accuracy")


def _stage_process(worker: int, workdir: str, barrier) -> None:  # noqa: ANN001
    """One stage job: opens a child run through ``stage_run`` (which also creates the store,
    the experiment and the parent run when no other job did yet) and logs params and
    per-epoch metrics. Runs in a forked process with its own SQLite connections."""
    import traceback

    os.chdir(workdir)
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the default store: sqlite:///mlflow.db
    os.environ.update({"SLURM_JOB_ID": "4242", "MTPKDOT_RULE": "train_student"})
    try:
        from pipeline_steps.layout import Layout
        from pipeline_steps.tracking import stage_run

        params = {"run": {"seed": 0, "experiment_prefix": "mtpkdot"}}
        layout = Layout("results", "biovid")
        barrier.wait(timeout=120)
        with stage_run(
            params, "biovid", layout, "train_student", method="mtpkdot", fold=worker
        ) as run:
            run.log_params({"lr": 0.003, "epochs": N_EPOCHS, "weights": {"task": 0.8, "ot": 0.2}})
            for epoch in range(N_EPOCHS):
                run.log_metrics({k: worker + epoch / 100 for k in KEYS}, step=epoch)
            run.set_tags({"worker": str(worker)})
    except BaseException:
        Path(workdir, f"error-{worker}.txt").write_text(traceback.format_exc())
        raise


@pytest.mark.slow  # ~25 s on an idle 2-core machine (one table creation + 8 jobs)
def test_eight_concurrent_stage_runs_lose_nothing(tmp_path: Path):
    """Fresh store (no tables, no experiment, no parent run): all 8 jobs race for each."""
    import pipeline_steps.tracking  # noqa: F401 - imported once here, inherited by the forks

    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(N_PROCS)
    procs = [
        ctx.Process(target=_stage_process, args=(i, str(tmp_path), barrier)) for i in range(N_PROCS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    failed = {p.name: p.exitcode for p in procs if p.exitcode != 0}
    details = "\n".join(e.read_text() for e in tmp_path.glob("error-*.txt"))
    assert not failed, f"{failed}\n{details}"

    from mlflow.tracking import MlflowClient

    # The default store: sqlite:///mlflow.db relative to the working directory.
    assert (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "mlruns").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exps = [e for e in client.search_experiments() if e.name == "mtpkdot-biovid"]
    assert len(exps) == 1
    runs = client.search_runs([exps[0].experiment_id], max_results=100)
    parent = json.loads((tmp_path / "results/biovid/mlflow_parent_run.json").read_text())["run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent]
    assert len(runs) == N_PROCS + 1, "one parent run, shared by all children"
    assert sorted(int(r.data.tags["fold"]) for r in children) == list(range(N_PROCS))
    for run in children:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["stage"] == "train_student" and tags["method"] == "mtpkdot"
        assert tags["slurm_job_id"] == "4242" and tags["snakemake_rule"] == "train_student"
        assert tags["worker"] == tags["fold"]
        assert run.data.params["weights.ot"] == "0.2" and run.data.params["lr"] == "0.003"
        worker = int(tags["fold"])
        for key in KEYS:
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == list(range(N_EPOCHS)), key
            assert all(m.value == pytest.approx(worker + m.step / 100) for m in history)


def test_retry_retries_locks_and_raises_other_errors(monkeypatch):
    from pipeline_steps import tracking

    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("(sqlite3.OperationalError) database is locked")
        return "done"

    assert tracking.retry(flaky) == "done" and len(calls) == 3

    def broken():
        raise ValueError("no such run")

    with pytest.raises(ValueError):
        tracking.retry(broken)


def test_relative_sqlite_uri_follows_the_working_directory(tmp_path, monkeypatch):
    from pipeline_steps import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        monkeypatch.chdir(tmp_path / sub)
        assert tracking.resolved_tracking_uri() == f"sqlite:///{tmp_path / sub / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x/m.db?timeout=60")
    assert tracking.resolved_tracking_uri() == f"sqlite:///{tmp_path / 'b/x/m.db'}?timeout=60"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking.resolved_tracking_uri() == "http://tracking:5000"


def test_parent_run_ends_and_a_new_pipeline_run_gets_a_new_parent(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from pipeline_steps import close_run
    from pipeline_steps.layout import Layout
    from pipeline_steps.tracking import close_parent_run, parent_run_id

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    params = {"run": {"seed": 0, "experiment_prefix": "mtpkdot"}}
    layout = Layout("results", "biovid")
    assert close_parent_run(layout) is None  # nothing ran yet: nothing to end
    first = parent_run_id(params, "biovid", layout)
    assert parent_run_id(params, "biovid", layout) == first  # jobs of one run share it
    assert close_parent_run(layout, "FAILED") == first
    mc = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = mc.get_run(first)
    assert run.info.status == "FAILED" and run.info.end_time
    close_parent_run(layout, "FINISHED")  # an ended run keeps its status
    assert mc.get_run(first).info.status == "FAILED"
    second = parent_run_id(params, "biovid", layout)
    assert second != first
    with pytest.raises(ValueError, match="status"):
        close_parent_run(layout, "DONE")

    (tmp_path / "params.yaml").write_text(
        "run: {results_dir: results}\ndatasets: {biovid: {layout: biovid, root: x}}\n"
    )
    close_run.main(["--params", "params.yaml", "--dataset", "biovid"])
    assert mc.get_run(second).info.status == "FINISHED"
