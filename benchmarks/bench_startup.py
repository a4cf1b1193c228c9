"""CPU time a torch step spends before its first line of work, and what MLflow logging costs.

Each step runs as ``python -m pipeline_steps.<step>`` would (``runpy`` with ``alter_sys``) on a
tiny params file, in a fresh interpreter, and is stopped when it first reads its input (the
dataset index, ``fold_data.load_index``): by then it has done everything it does before its
work (imports, params validation, seeding and the determinism switch, threads, device). The
MLflow part (import, client of a SQLite store, one child run opened and closed, the parent
made on the way) is timed on its own as a whole process (python, params, mlflow import, client,
runs), since a step pays it only when it logs. References run
the same way under the same load: a bare interpreter, ``import torch``, and ``import pandas``
(which the index read imports, with pyarrow, as its first work); the ratios to them are what
to compare between machines or loads.

    python benchmarks/bench_startup.py                 # 3 repeats, median
    python benchmarks/bench_startup.py --steps evaluate --repeats 1
    python benchmarks/bench_startup.py --job-cpu 14    # start-up share of a 14 CPU s job

Run it with PYTHONPATH pointing at another checkout to measure that code instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# What each step needs on its command line besides --params/--dataset/--fold.
STEPS = {
    "train_modality_teacher": ["--modality", "video"],
    "train_fusion_teacher": [],
    "align_teacher_pool": [],
    "train_student": ["--method", "mtpkdot"],
    "evaluate": ["--method", "mtpkdot"],
}

# Runs in the child: report CPU seconds (user + system) at the probe point as one JSON line.
DRIVER = r"""
import json, resource, runpy, sys

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

def report(**values):
    print("BENCH " + json.dumps(values), flush=True)

what, args = sys.argv[1], sys.argv[2:]
if what == "bare":
    report(cpu=cpu())
elif what == "torch":
    import torch
    report(cpu=cpu())
elif what == "pandas":
    import pandas
    report(cpu=cpu())
elif what == "mlflow":
    from pipeline_steps.config import load_params
    from pipeline_steps.layout import layout_for
    from pipeline_steps import tracking
    params = load_params(args[0])
    with tracking.stage_run(params, "biovid", layout_for(params, "biovid"), "bench") as run:
        run.log_metrics({"x": 1.0})
    report(cpu=cpu())
else:
    import pipeline_steps.fold_data as fold_data  # every torch step reads its index through it

    class Reached(BaseException):
        pass

    def probe(layout):
        report(cpu=cpu(), modules=len(sys.modules), compiler="torch._dynamo" in sys.modules)
        raise Reached

    fold_data.load_index = probe
    sys.argv = [what, *args]
    try:
        runpy.run_module(what, run_name="__main__", alter_sys=True)
    except Reached:
        sys.exit(0)
    sys.exit("the step finished without reading its index")
"""


def tiny_params(root: Path) -> Path:
    """A valid params file for the BioVid demo layout (the probe stops before any data)."""
    params = {
        "run": {"datasets": ["biovid"], "results_dir": str(root / "results"), "device": "cpu"},
        "datasets": {
            "biovid": {
                "layout": "biovid",
                "root": str(root / "data"),
                "demo": True,
                "classes": ["BL1", "PA4"],
                "modalities": ["video", "eda", "ecg", "emg"],
                "task": "classification",
            }
        },
        "index_dataset": {"n_folds": 2},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_child(what: str, args: list[str], cwd: Path) -> dict:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, what, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH ")]
    if out.returncode != 0 or not lines:
        tail = out.stdout[-2000:] + out.stderr[-3000:]
        raise RuntimeError(f"{what}: exit {out.returncode}\n{tail}")
    return json.loads(lines[-1].removeprefix("BENCH "))


def median_of(repeats: int, what: str, args: list[str], cwd: Path) -> dict:
    runs = [run_child(what, args, cwd) for _ in range(repeats)]
    best = dict(runs[-1])  # module count of a run that found the params cache
    best["cpu"] = statistics.median(r["cpu"] for r in runs)
    return best


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=float, default=1.5, help="target CPU s before work")
    parser.add_argument("--job-cpu", type=float, help="a job's CPU s, for the start-up share")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        root = Path(tmp)
        params = tiny_params(root)
        common = ["--params", str(params), "--dataset", "biovid", "--fold", "0"]
        results = {
            "python (bare)": median_of(args.repeats, "bare", [], root),
            "import torch": median_of(args.repeats, "torch", [], root),
            "import pandas": median_of(args.repeats, "pandas", [], root),
        }
        for step in args.steps:
            mod = f"pipeline_steps.{step}"
            results[step] = median_of(args.repeats, mod, [*common, *STEPS[step]], root)
        results["mlflow logging (process)"] = median_of(args.repeats, "mlflow", [str(params)], root)
    torch_cpu = results["import torch"]["cpu"]
    bare_cpu = results["python (bare)"]["cpu"]
    load = os.getloadavg()
    print(f"CPU s before work, median of {args.repeats}; load {load[0]:.2f} {load[1]:.2f}")
    print(f"{'what':26s} {'cpu_s':>7s} {'x torch':>8s} {'x bare':>7s}  notes")
    for name, r in results.items():
        notes = []
        if "modules" in r:
            notes.append(f"{r['modules']} modules")
            notes.append("compiler stack imported" if r["compiler"] else "no compiler stack")
            notes.append("OK" if r["cpu"] <= args.limit else f"over {args.limit} s")
        if args.job_cpu and "modules" in r:
            notes.append(f"start-up share {r['cpu'] / args.job_cpu:.0%} of {args.job_cpu} s")
        ratio_t, ratio_b = r["cpu"] / torch_cpu, r["cpu"] / bare_cpu
        print(f"{name:26s} {r['cpu']:7.2f} {ratio_t:8.2f} {ratio_b:7.1f}  {', '.join(notes)}")
    return results


if __name__ == "__main__":
    main()
