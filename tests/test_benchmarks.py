"""The benchmark scripts still run against the current models API (tiny sizes; no timing
is asserted: speed is measured by running the scripts, not by tests)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline_steps.config import REPO_ROOT

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
    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    try:
        import bench_pipeline
    finally:
        sys.path.pop(0)
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
