"""The benchmark scripts still run against the current models API (tiny sizes; no timing
is asserted: speed is measured by running the scripts, not by tests)."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys

import pytest

from pipeline_steps.config import REPO_ROOT

METHODS = ("visual_only", "mtpkdot")  # bench_units' student methods

# bench_sinkhorn and bench_student_step run at tiny sizes inside gpu_check.sh --cpu-smoke
RUNS = {"bench_startup": ["--steps", "evaluate", "--repeats", "1"]}
EXPECTED = {
    "bench_sinkhorn": ["geomloss tensorized", "POT solve_sample", "goals:"],
    "bench_student_step": ["features:", "frames:", "ratio", "selection", "centroid"],
    # a step's start-up must not pull in torch's compiler stack (torch._dynamo, sympy)
    "bench_startup": ["import torch", "evaluate", "no compiler stack", "mlflow logging"],
}


@pytest.mark.parametrize("script", sorted(RUNS))
def test_benchmark_script_runs(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"benchmarks/{script}.py", *RUNS[script]],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for text in EXPECTED[script]:
        assert text in done.stdout, done.stdout


def test_gpu_check_cpu_smoke() -> None:
    """gpu_check.sh's CPU-safe parts: CUDA tests collected (and skipped without a GPU), the
    Sinkhorn and student-step benchmarks at tiny sizes on the CPU (so they still run against
    the current models API), the one-fold DAG planned with a dry run."""
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--cpu-smoke"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    smoke = ["mode cpu", "test_cuda.py", "train_student", "DAG planned"]
    for text in smoke + EXPECTED["bench_sinkhorn"] + EXPECTED["bench_student_step"]:
        assert text in done.stdout, done.stdout[-3000:]


def test_bench_pipeline_sums_jobs_per_rule(tmp_path) -> None:
    bench_pipeline = _module("bench_pipeline")
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    jobs = {"a/evaluate-0-x": (4.0, 2.0), "b/evaluate-1-x": (6.0, 3.0), "crop_faces-0": (10.0, 9.0)}
    for name, (wall, cpu) in jobs.items():
        path = tmp_path / f"{name}.benchmark.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + f"{wall}\t0:00:0{wall:.0f}\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n")
    rows = {r["rule"]: r for r in bench_pipeline.main([str(tmp_path), "--startup", "1.5"])}
    assert rows["evaluate"]["jobs"] == 2 and rows["evaluate"]["wall_s"] == 10.0
    assert rows["evaluate"]["median_s"] == 5.0 and rows["evaluate"]["cpu_s"] == 5.0
    assert rows["evaluate"]["share"] == 0.5 and rows["evaluate"]["startup_share"] == 3.0 / 5.0
    assert rows["crop_faces"]["startup_share"] == 1.5 / 9.0


def test_bench_units_tiny(tmp_path) -> None:
    """bench_units at tiny sizes: every per-unit figure is there, positive and finite, and the
    JSON matches the printed table (the scaling sheet's input; its timings are not tested)."""
    out = tmp_path / "units.json"
    tiny = ["--tiny", "--subjects", "6", "--clips-per-class", "2", "--folds", "2"]
    tiny += ["--epochs", "2", "--r3d-clips", "2", "--real-frames", "1", "--affwild2-people", "5"]
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_units.py", *tiny, "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    values = {m["key"]: m["value"] for m in result["measures"]}
    expected = [f"crop_{d}_{u}" for d in ("biovid", "affwild2") for u in ("clips", "frames")]
    expected += [
        "crop_biovid_real_clips",
        "crop_window_real_frames",
        "physio_eda",
        "physio_ecg",
        "physio_emg",
        "audio_logmel",
    ]
    expected += [f"teacher_biovid_{m}" for m in ("video", "eda", "ecg", "emg")]
    expected += ["teacher_video_r3d_18", "teacher_affwild2_video", "teacher_affwild2_audio"]
    for d in ("biovid", "affwild2"):
        expected += [f"fusion_{d}", f"pool_{d}"]
        expected += [f"{s}_{d}_{m}" for s in ("student", "evaluate") for m in METHODS]
    assert sorted(values) == sorted(expected)
    assert all(math.isfinite(v) and v > 0 for v in values.values()), values
    for key in ("video_biovid_bytes_per_clip", "eda_bytes_per_clip", "audio_bytes_per_window"):
        assert result["storage"][key] > 0
    assert result["sizes"]["biovid_fold0"]["test"] > 0
    for m in result["measures"]:
        assert m["label"] in done.stdout
    assert "GPU: not measured" in done.stdout
    # the scaling sheet's projection reads it: job counts of the real DAG, finite numbers
    sheet = _module("project_scaling").main([str(out)])
    assert "| BioVid A, BL1 vs PA4, 4 folds | train_student | 16 |" in sheet
    assert "| BioVid A, BL1 vs PA4, LOSO | train_modality_teacher:video | 87 |" in sheet
    assert "| Aff-Wild2, 4 folds | extract_audio | 1 |" in sheet
    assert "nan" not in sheet and "inf" not in sheet


def _module(name: str):  # noqa: ANN202
    """A script of benchmarks/ imported as a module."""
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_scaling_doc_tables_come_from_its_measurement() -> None:
    """docs/scaling.md's projection tables are project_scaling's output on the measurement
    committed beside it (rerun both after re-measuring)."""
    sheet = _module("project_scaling").main([str(REPO_ROOT / "docs" / "scaling_units.json")])
    doc = (REPO_ROOT / "docs" / "scaling.md").read_text()
    tables = [t for t in sheet.split("\n\n") if t.startswith("|")]
    assert len(tables) == 3
    for table in tables:
        assert table in doc, table[:200]


def test_projection_formulas() -> None:
    """project_scaling's per-job costs from made-up unit costs: features = clips / rate,
    a training job = start-up + epochs x (core-s per epoch per 1000 clips) x training clips /
    1000, the pool job adds cross_fit K x the chain on (K - 1) / K of the clips."""
    ps = _module("project_scaling")
    keys = ["crop_biovid_real_clips", "physio_eda", "physio_ecg", "physio_emg"]
    keys += [f"teacher_biovid_{m}" for m in ("video", "eda", "ecg", "emg")]
    keys += ["fusion_biovid", "pool_biovid", "student_biovid_visual_only"]
    keys += ["student_biovid_mtpkdot", "evaluate_biovid_visual_only", "teacher_video_r3d_18"]
    units = {"measures": [{"key": k, "value": 2.0} for k in keys], "storage": {}}
    args = argparse.Namespace(
        startup_s=4.0, shards=10, seeds=1, gpu_speedup_small=10.0, gpu_speedup_r3d=100.0
    )
    proj = ps.Projection(ps.biovid("b", 40, 4), units, args)
    n_train = 3480 * (87 - 87 / 4 - 2) / 87
    stages = proj.stage_core_s()
    assert stages["crop_faces"] == (10, 4.0 + 3480 / 2.0 / 10, False)
    p = proj.params
    epoch = 2.0 * n_train / 1000
    jobs, student, gpu = stages["train_student"]
    assert (jobs, gpu) == (16, True)
    assert math.isclose(student, 4.0 + p["train_student"]["epochs"] * epoch)
    k = p["align_teacher_pool"]["cross_fit"]
    chain = epoch * (
        4 * p["train_modality_teacher"]["epochs"]
        + p["train_fusion_teacher"]["epochs"]
        + p["align_teacher_pool"]["epochs"]
    )
    pool = 4.0 + p["align_teacher_pool"]["epochs"] * epoch + (k - 1) * chain
    assert math.isclose(stages["align_teacher_pool"][1], pool)
    assert math.isclose(proj.gpu_s("train_student", student), 4.0 + (student - 4.0) / 10.0)
