"""The private test cluster (start/stop scripts beside this file) and what its jobs left behind.

The SLURM tests use a cluster that `.ci/run` started (``MTPKDOT_SLURM_DIR``), or start one
themselves in a temporary folder when SLURM is installed. Where none can start, they skip and
say why: ``MTPKDOT_SLURM_UNAVAILABLE`` (set by `.ci/run`) or the start script's message.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline_steps.config import REPO_ROOT

HERE = Path(__file__).resolve().parent
USER_PROFILE = REPO_ROOT / "slurm"
TEST_PROFILE = HERE / "test-cluster"
START_TIMEOUT_S = 300
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


@dataclass(frozen=True)
class Cluster:
    """A running test cluster: where it lives and the environment its clients need."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "SLURM_CONF": str(self.root / "etc/slurm.conf"),
            "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def run(self, *cmd: str) -> str:
        """A SLURM client command (squeue, scancel ...) against this cluster; its stdout."""
        out = subprocess.run(
            cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stderr.strip()}")
        return out.stdout

    def jobs(self, run_id: str) -> dict[str, dict[str, str]]:
        """SLURM job id -> state, partition, account, comment of one Snakemake run's jobs.

        squeue lists finished jobs too for the cluster's MinJobAge (an hour).
        """
        fields = ("state", "partition", "account", "comment")
        text = self.run(
            "squeue", "--states=all", "--noheader", "--name", run_id,
            "--format=%i|%T|%P|%a|%k",
        )  # fmt: skip
        rows = [line.split("|") for line in text.splitlines() if line.strip()]
        return {row[0]: dict(zip(fields, row[1:], strict=True)) for row in rows}


@contextmanager
def open_cluster(tmp_dir: Path) -> Iterator[Cluster]:
    """The cluster `.ci/run` started, or a private one started (and stopped) here."""
    if reason := os.environ.get("MTPKDOT_SLURM_UNAVAILABLE"):
        pytest.skip(f"SLURM test cluster unavailable: {reason}")
    if root := os.environ.get("MTPKDOT_SLURM_DIR"):
        yield Cluster(Path(root))
        return
    cmd = ["bash", str(HERE / "start_cluster.sh")]
    if os.environ.get("MTPKDOT_SLURM_INSTALL") == "1":
        cmd.append("--install")
    try:
        out = subprocess.run(
            [*cmd, str(tmp_dir)], capture_output=True, text=True, timeout=START_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"SLURM test cluster did not start within {START_TIMEOUT_S} s")
    if out.returncode != 0:
        pytest.skip(f"SLURM test cluster could not start: {out.stderr.strip()[-1500:]}")
    try:
        yield Cluster(tmp_dir)
    finally:
        subprocess.run(["bash", str(HERE / "stop_cluster.sh"), str(tmp_dir)], timeout=120)


@dataclass(frozen=True)
class Submission:
    """One job Snakemake submitted: its SLURM job id and the SLURM log of the job."""

    job_id: str
    log: Path

    @property
    def rule(self) -> str:
        """The rule, from the log's folder (.snakemake/slurm_logs/rule_<rule>/<wildcards>/)."""
        return self.log.parent.parent.name.removeprefix("rule_")


def submissions(console: str) -> list[Submission]:
    """Every sbatch submission that a Snakemake run reported on its console."""
    return [Submission(m[2], Path(m[3])) for m in SUBMITTED.finditer(console)]


def run_id(console: str) -> str:
    """The SLURM run ID: every job of one Snakemake run has it as its SLURM job name."""
    match = RUN_ID.search(console)
    assert match, "no 'SLURM run ID' in Snakemake's output"
    return match[1]


def profile_args() -> list[str]:
    """The user's profile with the test cluster's site settings on top."""
    return ["--profile", str(USER_PROFILE), "--profile", str(TEST_PROFILE)]
