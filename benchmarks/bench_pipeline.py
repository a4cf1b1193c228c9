"""Where a pipeline run's time went, from the jobs' Snakemake benchmark files.

Reads ``<logs>/**/*.benchmark.tsv`` (one per job; the rule is the file name up to the first
``-``) and prints, per rule: jobs, total and median wall seconds, total CPU seconds, the share of
all job time, and with ``--startup S`` (the CPU seconds a job spends before its work, as
``benchmarks/bench_startup.py`` prints them) the share of the rule's CPU that is start-up.

    python benchmarks/bench_pipeline.py logs --startup 1.2
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Job:
    rule: str
    wall_s: float
    cpu_s: float


def read_jobs(logs: Path) -> list[Job]:
    """One job per benchmark file (its last row: Snakemake writes one per repeat)."""
    jobs = []
    for path in sorted(logs.rglob("*.benchmark.tsv")):
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        if not rows or "s" not in rows[-1]:
            raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column)")
        row = rows[-1]
        cpu = row.get("cpu_time", "")
        jobs.append(
            Job(
                rule=path.name.removesuffix(".benchmark.tsv").split("-", 1)[0],
                wall_s=float(row["s"]),
                cpu_s=float(cpu) if cpu not in ("", "NA", "-") else float("nan"),
            )
        )
    return jobs


def summarise(jobs: list[Job], startup_s: float | None = None) -> list[dict]:
    """Per-rule rows, the largest total wall time first."""
    by_rule: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_rule[job.rule].append(job)
    total_wall = sum(j.wall_s for j in jobs) or 1.0
    rows = []
    for rule, group in by_rule.items():
        walls = [j.wall_s for j in group]
        cpu = sum(j.cpu_s for j in group)
        row = {
            "rule": rule,
            "jobs": len(group),
            "wall_s": sum(walls),
            "median_s": statistics.median(walls),
            "cpu_s": cpu,
            "share": sum(walls) / total_wall,
        }
        if startup_s is not None:
            spent = sum(min(startup_s, j.cpu_s) for j in group if j.cpu_s == j.cpu_s)
            row["startup_share"] = spent / cpu if cpu > 0 else float("nan")
        rows.append(row)
    return sorted(rows, key=lambda r: -r["wall_s"])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path, nargs="?", default=Path("logs"))
    parser.add_argument("--startup", type=float, help="CPU s per job before its work")
    args = parser.parse_args(argv)
    jobs = read_jobs(args.logs)
    if not jobs:
        raise SystemExit(f"{args.logs}: no *.benchmark.tsv files")
    rows = summarise(jobs, args.startup)
    has_startup = args.startup is not None
    head = f"{'rule':24s} {'jobs':>4s} {'wall_s':>8s} {'median_s':>8s} {'cpu_s':>8s} {'share':>6s}"
    print(head + ("  start-up share of cpu" if has_startup else ""))
    for r in rows:
        line = (
            f"{r['rule']:24s} {r['jobs']:4d} {r['wall_s']:8.1f} {r['median_s']:8.1f} "
            f"{r['cpu_s']:8.1f} {r['share']:6.1%}"
        )
        print(line + (f"  {r['startup_share']:.0%}" if has_startup else ""))
    wall, cpu = sum(j.wall_s for j in jobs), sum(j.cpu_s for j in jobs)
    total = f"{'all':24s} {len(jobs):4d} {wall:8.1f} {'':8s} {cpu:8.1f} {1:6.0%}"
    if has_startup:
        spent = sum(min(args.startup, j.cpu_s) for j in jobs if j.cpu_s == j.cpu_s)
        total += f"  {spent / cpu:.0%}" if cpu > 0 else ""
    print(total)
    return rows


if __name__ == "__main__":
    main()
