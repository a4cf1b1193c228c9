"""End to end on the Aff-Wild2-layout demo: regression from one code path (CCC report, -5
frames masked, every test window evaluated) and per-frame predictions from a face video."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import tiny_affwild2_params

pytestmark = pytest.mark.slow
PARAMS = tiny_affwild2_params()
METHODS = PARAMS["train_student"]["methods"]
RESULTS = Path("results/affwild2")


def test_report_has_ccc_rows(affwild2_run: Path) -> None:
    table = pd.read_csv(affwild2_run / RESULTS / "report.csv")
    assert sorted(table["method"]) == sorted(METHODS)
    for col in ("ccc_valence_mean", "ccc_arousal_mean", "ccc_mean_mean"):
        assert table[col].map(math.isfinite).all(), col
        assert table[col].between(-1, 1).all(), col
    assert "accuracy_mean" not in table.columns
    # every fold tests on Validation_Set: the report says what its intervals measure
    markdown = (affwild2_run / RESULTS / "report.md").read_text()
    assert "Every fold tests on the same videos" in markdown


def test_every_test_window_is_evaluated(affwild2_run: Path) -> None:
    index = pd.read_parquet(affwild2_run / RESULTS / "index.parquet")
    test = index[index["split_0"] == "test"]
    assert set(test["set"]) == {"Validation_Set"}  # the published protocol's test set
    for method in METHODS:
        path = affwild2_run / RESULTS / f"fold0/eval/seed0/{method}.json"
        result = json.loads(path.read_text())
        assert result["n"] == len(test)
        assert math.isfinite(result["ccc_mean"])


def test_teacher_losses_fall(affwild2_run: Path) -> None:
    for name in ("train_modality_teacher-audio", "train_fusion_teacher-fusion"):
        history = pd.read_csv(affwild2_run / RESULTS / f"fold0/metrics/{name}.history.csv")
        assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0], name


def run_predict(run_dir: Path, method: str, video: Path, out: Path) -> subprocess.CompletedProcess:
    """``python -m pipeline_steps.predict`` on fold 0 of the tiny run, as a user calls it."""
    params = str(run_dir / "params.yaml")
    cmd = [sys.executable, "-m", "pipeline_steps.predict", "--params", params]
    cmd += ["--dataset", "affwild2", "--fold", "0", "--method", method]
    cmd += ["--input", str(video), "--output", str(out)]
    return subprocess.run(cmd, cwd=run_dir, capture_output=True, text=True, timeout=600)


def test_predict_writes_one_row_per_frame(affwild2_run: Path, tmp_path: Path) -> None:
    video = sorted((affwild2_run / "data/affwild2_demo/videos").glob("*.mp4"))[0]
    cap = cv2.VideoCapture(str(video))
    n_frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    out = tmp_path / "frames.csv"
    done = run_predict(affwild2_run, "mtpkdot", video, out)
    assert done.returncode == 0, done.stderr[-3000:]
    table = pd.read_csv(out)
    assert list(table.columns) == ["video", "frame", "valence", "arousal", "face_found_ratio"]
    assert table["frame"].tolist() == list(range(1, n_frames + 1))
    assert np.isfinite(table[["valence", "arousal"]].to_numpy()).all()
    assert (table["face_found_ratio"] > 0).all()


def test_predict_refuses_a_video_shorter_than_a_window(affwild2_run: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.mp4"
    writer = cv2.VideoWriter(str(short), cv2.VideoWriter_fourcc(*"mp4v"), 25, (64, 64))
    for _ in range(PARAMS["datasets"]["affwild2"]["window_frames"] - 4):
        writer.write(np.full((64, 64, 3), 128, np.uint8))
    writer.release()
    done = run_predict(affwild2_run, "visual_only", short, tmp_path / "x.csv")
    assert done.returncode != 0
    assert "fewer than one window" in done.stderr and str(short) in done.stderr
    assert not (tmp_path / "x.csv").exists()


def test_regression_student_finetunes_on_cross_fitted_teachers(affwild2_run: Path) -> None:
    """The same student code path as BioVid: encoder fine-tuned, cross-fitted pool outputs,
    the alignment keeps a trained epoch, teacher shares recorded (1 - CCC selection)."""
    import torch

    from pipeline_steps.layout import Layout
    from pipeline_steps.student_model import load_video_teacher, load_visual_student

    layout = Layout(str(affwild2_run / "results"), "affwild2")
    teacher = load_video_teacher(layout, 0)[0].encoder.state_dict()
    student = load_visual_student(layout, 0, "mtpkdot", 0).encoder.state_dict()
    assert any(not torch.equal(teacher[k], student[k]) for k in teacher)
    cache = torch.load(layout.pool_outputs(0), weights_only=True)
    index = pd.read_parquet(layout.index).set_index("sample_id")
    for sample, part in zip(cache["sample_ids"], cache["part"], strict=True):
        if index.loc[sample, "split_0"] == "train":
            assert sample not in cache["part_train_ids"][part]
    pool = json.loads(layout.metrics(0, "align_teacher_pool", "pool").read_text())
    assert pool["best_epoch"] > 0
    result = json.loads(layout.evaluation(0, "mtpkdot", 0).read_text())
    shares = [v for k, v in result.items() if k.startswith("teacher_share_")]
    assert sum(shares) == pytest.approx(1.0)
