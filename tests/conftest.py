"""Shared fixtures: a tiny demo project run end to end by Snakemake, once per session."""

from __future__ import annotations

import os
import subprocess
import sys
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


def snakemake(workdir: Path, *args: str, timeout: int = 2400) -> subprocess.CompletedProcess:
    """Run the repo's Snakefile on ``workdir`` (its params.yaml, its own MLflow store)."""
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
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


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


def _run_or_fail(workdir: Path) -> Path:
    out = snakemake(workdir)
    if out.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "logs").rglob("*.log"))
        )
        pytest.fail(f"snakemake failed:\n{out.stdout[-5000:]}\n{out.stderr[-5000:]}\n{logs}")
    return workdir


@pytest.fixture(scope="session")
def affwild2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG on a tiny Aff-Wild2-layout demo (regression); returns the directory.

    Set MTPKDOT_AFFWILD2_RUN to a finished run's directory to reuse it while developing.
    """
    if os.environ.get("MTPKDOT_AFFWILD2_RUN"):
        return Path(os.environ["MTPKDOT_AFFWILD2_RUN"])
    workdir = tmp_path_factory.mktemp("affwild2_run")
    return _run_or_fail(write_project(workdir, tiny_affwild2_params()))


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole DAG on a tiny demo dataset; returns the working directory.

    Set MTPKDOT_DEMO_RUN to a finished run's directory to reuse it while developing.
    """
    if os.environ.get("MTPKDOT_DEMO_RUN"):
        return Path(os.environ["MTPKDOT_DEMO_RUN"])
    return _run_or_fail(write_project(tmp_path_factory.mktemp("demo_run"), tiny_params()))
