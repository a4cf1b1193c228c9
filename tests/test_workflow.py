"""Orchestration checks: Snakemake lint/format, SLURM profile dry run, and dvc.yaml == DAG."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_steps.config import REPO_ROOT

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


def run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False
    )


def test_snakemake_lint_is_clean():
    out = run("snakemake", "--lint")
    assert out.returncode == 0, out.stderr
    assert "Lints for" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_snakefmt_is_clean():
    out = run("snakefmt", "--check", "Snakefile", "workflow/rules")
    assert out.returncode == 0, out.stdout + out.stderr


def test_slurm_profile_dry_run():
    out = run("snakemake", "-n", "--forceall", "--profile", "slurm")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "train_student" in out.stdout


def normalise(cmd: str) -> str:
    """A step invocation without what differs by design (params file, env prefix, log, manifest)."""
    words = shlex.split(cmd.split(">")[0].removeprefix("Shell command:"))
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w in ("--params", "--manifest"):
            skip = True
            continue
        out.append(w)
    return " ".join(out)


def snakemake_jobs() -> tuple[set[str], set[str]]:
    dry = run("snakemake", "-n", "--forceall", "--printshellcmds")
    assert dry.returncode == 0, dry.stderr
    cmds = {
        normalise(line.strip())
        for line in dry.stdout.splitlines()
        if "python -m pipeline_steps." in line
    }
    summary = run("snakemake", "--detailed-summary")
    assert summary.returncode == 0, summary.stderr
    outs = {line.split("\t")[0] for line in summary.stdout.splitlines()[1:] if "\t" in line}
    return cmds, outs


def dvc_stages() -> tuple[set[str], set[str]]:
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        stages = list(repo.index.stages)
        cmds = {normalise(" ".join(s.cmd.split())) for s in stages}
        outs = {str(Path(o.fs_path).relative_to(REPO_ROOT)) for s in stages for o in s.outs}
    return cmds, outs


def test_dvc_yaml_matches_the_snakemake_dag():
    smk_cmds, smk_outs = snakemake_jobs()
    dvc_cmds, dvc_outs = dvc_stages()
    assert smk_cmds == dvc_cmds, {
        "only in Snakemake": sorted(smk_cmds - dvc_cmds),
        "only in dvc.yaml": sorted(dvc_cmds - smk_cmds),
    }
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    demo_roots = {ds["root"] for ds in params["datasets"].values() if ds.get("demo")}
    assert smk_outs == dvc_outs - demo_roots, {
        "only in Snakemake": sorted(smk_outs - dvc_outs),
        "only in dvc.yaml": sorted(dvc_outs - demo_roots - smk_outs),
    }


@pytest.mark.parametrize("stage", ["train_modality_teacher", "train_student", "evaluate"])
def test_dvc_fold_lists_match_n_folds(stage: str):
    dvc = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    folds = dvc["stages"][stage]["matrix"]["fold"]
    assert folds == list(range(params["index_dataset"]["n_folds"]))
