"""The data stages and one training stage give the same bytes and metrics in two directories."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from pipeline_steps.trainer import load_checkpoint
from tests.conftest import tiny_params, write_project

STAGES = [
    ("make_demo_data", "--manifest", "results/biovid/demo_data.json"),
    ("index_dataset",),
    ("crop_faces", "--shard", "0"),
    ("extract_physio", "--modality", "eda"),
    ("train_modality_teacher", "--fold", "0", "--modality", "video"),
]
# everything the data stages write (the manifest names its folder: left out of the comparison)
DATA = ("data/biovid_demo", "results/biovid/index.parquet", "results/biovid/features")


def _params() -> dict:
    params = tiny_params()
    params["datasets"]["biovid"]["modalities"] = ["video", "eda"]
    params["make_demo_data"] = {
        "n_subjects": 6,
        "samples_per_class": 2,
        "duration_s": 2.5,
        "frame_size": 96,
    }
    params["crop_faces"] = {"n_shards": 1, "n_frames": 4, "size": 32, "window_s": [0.5, 2.0]}
    params["extract_physio"] = {"window_s": [0.5, 2.5]}
    params["train_modality_teacher"].update(epochs=2, patience=2)
    return params


def _run_stages(root: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    for step, *extra in STAGES:
        cmd = [sys.executable, "-m", f"pipeline_steps.{step}", "--params", "params.yaml"]
        cmd += ["--dataset", "biovid", *extra]
        done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"{step} failed in {root}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def _digests(root: Path) -> dict[str, str]:
    files = []
    for name in DATA:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.name != ".mtpkdot_demo.json"  # holds the settings only; compared below
    }


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The stages in two fresh directories, at the same time (each job is single-threaded)."""
    roots = [write_project(tmp_path_factory.mktemp(n) / "project", _params()) for n in ("a", "b")]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(_run_stages, roots))
    return roots[0], roots[1]


def test_data_stages_are_identical_in_two_directories(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    ours = _digests(first)
    assert any(k.endswith(".mp4") for k in ours) and any(k.endswith(".parquet") for k in ours)
    assert ours == _digests(second)
    marker = "data/biovid_demo/.mtpkdot_demo.json"
    assert (first / marker).read_text() == (second / marker).read_text()


def test_training_stage_gives_identical_metrics_and_weights(two_runs: tuple[Path, Path]) -> None:
    first, second = two_runs
    metrics = "results/biovid/fold0/metrics/train_modality_teacher-video"
    for suffix in (".json", ".history.csv"):
        assert (first / f"{metrics}{suffix}").read_text() == (
            second / f"{metrics}{suffix}"
        ).read_text()
    assert json.loads((first / f"{metrics}.json").read_text())["best_epoch"] >= 0
    state = [
        load_checkpoint(r / "results/biovid/fold0/teachers/video.pt")["state_dict"]
        for r in two_runs
    ]
    assert state[0].keys() == state[1].keys()
    for key, value in state[0].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, state[1][key]), key
