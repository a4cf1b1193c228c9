"""Shared fixtures: a tiny demo project run end to end by Snakemake, once per session.

The session's long builds (the Snakemake runs here, DVC's project in test_dvc.py) start in the
background as soon as the first test begins, for every build some selected test needs: they
are separate process trees that each leave a core idle much of the time (a chain of
single-threaded jobs; ``dvc repro`` runs one stage at a time), so together with the unit tests
they keep both cores busy. Their fixtures then wait for them. Set MTPKDOT_PRESTART=0 to
build each one only when its first test asks for it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pipeline_steps.config import REPO_ROOT

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

TINY = {
    "run": {"datasets": ["biovid"], "results_dir": "results", "seed": 0, "device": "cpu"},
    "datasets": {
        "biovid": {
            "layout": "biovid",
            "root": "data/biovid_demo",
            "demo": True,
            "classes": ["BL1", "PA4"],
            "modalities": ["video", "eda", "ecg", "emg"],
            "task": "classification",
            "video_input": "delta",
        }
    },
    "make_demo_data": {
        "n_subjects": 6,
        "samples_per_class": 3,
        "frame_size": 128,
        "affwild2_people": 6,
        "affwild2_seconds": 12.0,
    },
    "index_dataset": {"n_folds": 2, "n_val_subjects": 1},
    "crop_faces": {"n_shards": 2, "n_frames": 4, "size": 48},
    "train_modality_teacher": {"epochs": 3, "batch_size": 8, "embed_dim": 16, "width": 4},
    "train_fusion_teacher": {"epochs": 4, "batch_size": 8},
    "align_teacher_pool": {"epochs": 4, "batch_size": 8, "adapter_hidden": 8, "cross_fit": 2},
    "train_student": {
        "epochs": 4,
        "batch_size": 8,
        "hidden": 16,
        "topk": 4,
        "min_epochs": 2,
        "smooth_epochs": 2,
    },
}


def tiny_params() -> dict:
    return yaml.safe_load(yaml.safe_dump(TINY))


def write_project(root: Path, params: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def snakemake_command(workdir: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run the repo's Snakefile on ``workdir``."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        "snakemake",
        "--snakefile",
        str(REPO_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "params.yaml"),
        "--cores",
        "2",
        *args,
    ]
    return cmd, env


def snakemake(workdir: Path, *args: str, timeout: int = 2400) -> subprocess.CompletedProcess:
    """Run the repo's Snakefile on ``workdir`` (its params.yaml, its own MLflow store)."""
    cmd, env = snakemake_command(workdir, *args)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Build:
    """A command running in the background (own process group), output to ``log``."""

    workdir: Path
    cmd: list[str]
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, workdir: Path, cmd: list[str], env: dict[str, str], cwd: Path) -> Build:
        log = workdir.parent / f"{workdir.name}.build.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return cls(workdir, cmd, proc, log)

    def wait(self, timeout: float = 2400) -> subprocess.CompletedProcess:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        output = self.log.read_text()
        return subprocess.CompletedProcess(self.cmd, code, output, "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)


# fixture name -> starts its build in a fresh folder (test modules add theirs at import)
PRESTART: dict[str, Callable[[pytest.TempPathFactory], Build]] = {}
# fixture name -> the variable naming a finished run to reuse instead (see the fixtures)
REUSE = {"demo_run": "MTPKDOT_DEMO_RUN", "affwild2_run": "MTPKDOT_AFFWILD2_RUN"}
_STARTED: dict[str, Build] = {}


def started(name: str, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The build of fixture ``name``: the one started in the background, else a new one."""
    if name not in _STARTED:
        _STARTED[name] = PRESTART[name](tmp_path_factory)
    return _STARTED[name]


@pytest.fixture(scope="session", autouse=True)
def _prestart_builds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Start, at once, the background builds of the fixtures the selected tests use."""
    if os.environ.get("MTPKDOT_PRESTART", "1") != "0":
        items = request.session.items
        wanted = {name for item in items for name in getattr(item, "fixturenames", ())}
        for name in PRESTART:
            if name in wanted and not os.environ.get(REUSE.get(name, "")):
                started(name, tmp_path_factory)
    yield
    for build in _STARTED.values():
        build.stop()


TINY_AFFWILD2 = {
    "layout": "affwild2",
    "root": "data/affwild2_demo",
    "demo": True,
    "modalities": ["video", "audio"],
    "task": "regression",
    "window_frames": 16,
    "val_fraction": 0.25,
}


def tiny_affwild2_params() -> dict:
    """The tiny project on the Aff-Wild2-layout demo: two folds (val re-carved), two methods."""
    params = tiny_params()
    params["run"]["datasets"] = ["affwild2"]
    params["datasets"] = {"affwild2": dict(TINY_AFFWILD2)}
    params["index_dataset"]["n_folds"] = 2
    params["train_student"]["methods"] = ["visual_only", "mtpkdot"]
    return params


def _start_snakemake(workdir: Path) -> Build:
    cmd, env = snakemake_command(workdir)
    return Build.start(workdir, cmd, env, cwd=Path.cwd())


def _run_or_fail(build: Build) -> Path:
    t0 = time.monotonic()
    out = build.wait()
    workdir = build.workdir
    print(f"[conftest] {workdir.name}: waited {time.monotonic() - t0:.0f} s for its build")
    if out.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed:\n{out.stdout[-8000:]}\n{logs}")
    return workdir


PRESTART["affwild2_run"] = lambda factory: _start_snakemake(
    write_project(factory.mktemp("affwild2_run"), tiny_affwild2_params())
)
PRESTART["demo_run"] = lambda factory: _start_snakemake(
    write_project(factory.mktemp("demo_run"), tiny_params())
)


@pytest.fixture(scope="session")
def affwild2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG on a tiny Aff-Wild2-layout demo (regression); returns the directory.

    Set MTPKDOT_AFFWILD2_RUN to a finished run's directory to reuse it while developing.
    """
    if os.environ.get("MTPKDOT_AFFWILD2_RUN"):
        return Path(os.environ["MTPKDOT_AFFWILD2_RUN"])
    return _run_or_fail(started("affwild2_run", tmp_path_factory))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG on a tiny demo dataset; returns the working directory.

    Set MTPKDOT_DEMO_RUN to a finished run's directory to reuse it while developing.
    """
    if os.environ.get("MTPKDOT_DEMO_RUN"):
        return Path(os.environ["MTPKDOT_DEMO_RUN"])
    return _run_or_fail(started("demo_run", tmp_path_factory))
