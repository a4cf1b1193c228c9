"""`snakemake --profile slurm` for real, on a private one-node SLURM cluster (tests/slurm).

Every job goes through sbatch; the results equal a local run of the same project; a cancelled
training job is resubmitted and continues after its last epoch; a data error stops the run
after the profile's retries with its message on the console. Deselect with ``-m "not slurm"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import (
    _run_or_fail,
    _start_snakemake,
    snakemake,
    tiny_params,
    write_project,
)
from tests.slurm.cluster import (
    TEST_PROFILE,
    USER_PROFILE,
    Cluster,
    open_cluster,
    profile_args,
    run_id,
    submissions,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TIMEOUT_S = 900  # one Snakemake run on the test cluster

CONSOLE = ".snakemake/test_slurm_console.txt"  # what the runs printed, kept for reuse
STUDENT = "results/biovid/fold0/metrics/seed0/train_student-mtpkdot.json"
CHILD_STAGES = {
    "train_modality_teacher",
    "train_fusion_teacher",
    "align_teacher_pool",
    "evaluate_teachers",
    "train_student",
    "evaluate",
}
COMPARED = [
    "report.csv",
    "fold*/metrics/*.json",
    "fold*/metrics/*.history.csv",
    "fold*/metrics/seed*/*.json",
    "fold*/metrics/seed*/*.history.csv",
    "fold*/eval/*.json",
    "fold*/eval/seed*/*.json",
    "fold*/eval/seed*/*.predictions.csv",
]


def slurm_params() -> dict:
    """The tiny BioVid demo cut to its fewest jobs: two modalities, one shard, one method and
    one epoch per stage (two folds: the fewest the index allows)."""
    params = tiny_params()
    params["datasets"]["biovid"]["modalities"] = ["video", "eda"]
    params["crop_faces"]["n_shards"] = 1
    for stage in (
        "train_modality_teacher",
        "train_fusion_teacher",
        "align_teacher_pool",
        "train_student",
    ):
        params[stage]["epochs"] = 1
    params["train_student"]["methods"] = ["mtpkdot"]
    return params


@dataclass(frozen=True)
class Runs:
    """The same project run through SLURM (``remote``) and locally (``local``)."""

    remote: Path
    local: Path
    console: str
    local_console: str
    seconds: float


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with open_cluster(tmp_path_factory.mktemp("slurm_cluster")) as started:
        yield started


@pytest.fixture
def on_cluster(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """The cluster's client environment for the Snakemake runs of one test."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    return cluster


def _console(out) -> str:
    return out.stdout + out.stderr


def _succeeded(out, workdir: Path) -> str:
    """The console of a Snakemake run that must have succeeded (else: console and job logs)."""
    if out.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}"
            for p in sorted(workdir.glob("**/*.log"))
            if "slurm_logs" in p.parts or "logs" in p.parts
        )
        pytest.fail(f"snakemake failed:\n{_console(out)[-6000:]}\n{logs[-12000:]}")
    return _console(out)


@pytest.fixture(scope="module")
def runs(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """The project through SLURM, and locally at the same time (the SLURM run mostly waits).

    Set MTPKDOT_SLURM_RUNS to a folder with an earlier fixture's ``slurm_run`` and
    ``local_run`` to reuse them while developing (on the same, still running cluster).
    """
    if reuse := os.environ.get("MTPKDOT_SLURM_RUNS"):
        remote, local = Path(reuse) / "slurm_run", Path(reuse) / "local_run"
        return Runs(remote, local, (remote / CONSOLE).read_text(), (local / CONSOLE).read_text(), 0)
    params = slurm_params()
    local = write_project(tmp_path_factory.mktemp("local_run"), params)
    remote = write_project(tmp_path_factory.mktemp("slurm_run"), params)
    with pytest.MonkeyPatch.context() as mp, ThreadPoolExecutor(1) as pool:
        for key, value in cluster.env.items():
            mp.setenv(key, value)
        local_done = pool.submit(_run_or_fail, _start_snakemake(local))
        start = time.monotonic()
        out = snakemake(remote, *profile_args(), timeout=TIMEOUT_S)
        seconds = time.monotonic() - start
        local_done.result()
    console = _succeeded(out, remote)
    local_console = "".join(p.read_text() for p in (local / ".snakemake/log").glob("*.log"))
    (remote / CONSOLE).write_text(console)
    (local / CONSOLE).write_text(local_console)
    print(f"\n[test_slurm] snakemake --profile slurm on the tiny demo: {seconds:.0f} s")
    return Runs(remote, local, console, local_console, seconds)


def _rules_run(console: str) -> Counter:
    """Rule -> jobs run, from a local Snakemake console or log (the target rule not counted)."""
    rules = Counter(re.findall(r"^(?:local)?rule (\w+):$", console, flags=re.MULTILINE))
    del rules["all"]
    return rules


def _gpu_rules() -> set[str]:
    profile = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}


def test_every_job_went_through_sbatch(runs: Runs, cluster: Cluster):
    subs = submissions(runs.console)
    assert Counter(s.rule for s in subs) == _rules_run(runs.local_console)
    assert len({s.job_id for s in subs}) == len(subs)
    for sub in subs:  # the job's SLURM log: named by its job id, written by the job
        assert sub.log.name == f"{sub.job_id}.log"
        assert f"rule {sub.rule}:" in sub.log.read_text(), sub.log
    jobs = cluster.jobs(run_id(runs.console))
    print("\n[test_slurm] squeue --states=all --name RUN_ID: job|state|partition|account|comment")
    for job_id, job in jobs.items():
        print("  " + "|".join([job_id, *job.values()]))
    assert set(jobs) == {s.job_id for s in subs}
    gpu_rules = _gpu_rules()
    for sub in subs:
        job = jobs[sub.job_id]
        assert job["state"] == "COMPLETED", (sub, job)
        assert job["comment"].startswith(f"rule_{sub.rule}"), (sub, job)
        assert job["account"] == "mtpkdot-test", job
        assert job["partition"] == ("test-gpu" if sub.rule in gpu_rules else "test-cpu"), job


def test_outputs_and_report_exist_and_metrics_equal_a_local_run(runs: Runs):
    results = runs.remote / "results/biovid"
    for name in ("report.csv", "report.md", "report.html"):
        assert (results / name).stat().st_size > 0, name
    assert any((results / "figures").glob("*.png"))
    compared = [p.relative_to(results) for pattern in COMPARED for p in results.glob(pattern)]
    assert len(compared) > 10, compared
    for rel in compared:
        local = runs.local / "results/biovid" / rel
        assert (results / rel).read_bytes() == local.read_bytes(), rel


def test_mlflow_children_attach_to_one_parent_with_their_slurm_job(runs: Runs):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs.remote / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mtpkdot-biovid")
    found = client.search_runs([exp.experiment_id], max_results=1000)
    parent_id = json.loads((runs.remote / "results/biovid/mlflow_parent_run.json").read_text())[
        "run_id"
    ]
    parents = [r.info.run_id for r in found if "mlflow.parentRunId" not in r.data.tags]
    assert parents == [parent_id]
    children = [r for r in found if r.info.run_id != parent_id]
    rule_of_job = {s.job_id: s.rule for s in submissions(runs.console)}
    expected = [job for job, rule in rule_of_job.items() if rule in CHILD_STAGES]
    assert sorted(r.data.tags["slurm_job_id"] for r in children) == sorted(expected)
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent_id
        assert rule_of_job[tags["slurm_job_id"]] == tags["snakemake_rule"] == tags["stage"]
        assert child.info.status == "FINISHED"


def _copy_project(src: Path, dst: Path, epochs: int) -> Path:
    """A copy of a finished project (file times kept) whose student trains ``epochs``."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("slurm_logs", "mlartifacts"))
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["train_student"].update(epochs=epochs, patience=epochs)
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


def _cancel_after_an_epoch(cluster: Cluster, work: Path, run: Future, timeout: float) -> str:
    """Wait until fold 0's student saved an epoch, then scancel its SLURM job; the job id."""
    resume = work / "results/biovid/fold0/resume/seed0/train_student-mtpkdot.pt"
    deadline = time.monotonic() + timeout
    while not resume.exists():
        if run.done() or time.monotonic() > deadline:
            pytest.fail(f"no epoch saved before the job ended or {timeout} s passed")
        time.sleep(0.05)
    (log,) = (work / ".snakemake/slurm_logs/rule_train_student").glob("biovid_0_*/*.log")
    cluster.run("scancel", log.stem)
    return log.stem


def test_a_cancelled_training_job_resumes_with_the_metrics_of_an_uninterrupted_run(
    runs: Runs, on_cluster: Cluster, tmp_path: Path
):
    epochs = 30
    remote = _copy_project(runs.remote, tmp_path / "slurm", epochs)
    local = _copy_project(runs.local, tmp_path / "local", epochs)
    with ThreadPoolExecutor(2) as pool:
        uninterrupted = pool.submit(snakemake, local, STUDENT)
        run = pool.submit(snakemake, remote, *profile_args(), STUDENT, timeout=TIMEOUT_S)
        cancelled = _cancel_after_an_epoch(on_cluster, remote, run, timeout=600)
        console = _succeeded(run.result(), remote)
        _succeeded(uninterrupted.result(), local)
    jobs = [s.job_id for s in submissions(console)]
    assert len(jobs) == 2 and jobs[0] == cancelled, console[-3000:]
    states = on_cluster.jobs(run_id(console))
    assert [states[j]["state"] for j in jobs] == ["CANCELLED", "COMPLETED"]
    log = (remote / "logs/biovid/fold0/seed0/train_student-mtpkdot.log").read_text()
    resumed = re.search(r"\[resume\] .*: continuing after epoch (\d+)", log)
    assert resumed and int(resumed[1]) < epochs - 1, log[-2000:]  # 0-based: epochs left
    print(f"\n[test_slurm] job {cancelled} cancelled; job {jobs[1]}: {resumed[0]}")
    for name in ("train_student-mtpkdot.json", "train_student-mtpkdot.history.csv"):
        rel = Path("results/biovid/fold0/metrics/seed0") / name
        assert (remote / rel).read_text() == (local / rel).read_text(), name


def test_a_data_error_stops_the_run_after_the_retries_with_its_message(
    on_cluster: Cluster, tmp_path: Path
):
    params = slurm_params()
    params["datasets"]["biovid"].update(demo=False, root="data/broken")
    samples = tmp_path / "data/broken/samples.csv"
    samples.parent.mkdir(parents=True)
    samples.write_text("subject\tvideo\nS1\tS1.mp4\n")
    out = snakemake(write_project(tmp_path, params), *profile_args(), timeout=TIMEOUT_S)
    console = _console(out)
    assert out.returncode != 0
    retries = yaml.safe_load((USER_PROFILE / "config.yaml").read_text())["retries"]
    assert [s.rule for s in submissions(console)] == ["index_dataset"] * (retries + 1)
    assert f"{samples.relative_to(tmp_path)}: missing columns" in console, console[-4000:]
