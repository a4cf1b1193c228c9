"""DVC for real, on a tiny demo project (git + dvc, shared by the tests of this module):

- `dvc repro` builds everything; a changed train_student param makes `dvc status` flag only
  train_student, and `dvc repro` reruns only train_student, evaluate and report (every other
  stage's dvc.lock entry is unchanged);
- `dvc push` / `dvc pull` through a local-folder remote restore a deleted output bit for bit;
- `dvc exp run --set-param` runs a variant whose metrics `dvc exp show --json` lists.

The project is smaller than the Snakemake demo (two modalities, one crop shard, one method,
two epochs per stage): `dvc repro` runs the stages one at a time, each a fresh Python process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_steps import job_matrix
from pipeline_steps.config import REPO_ROOT, load_params
from tests.conftest import PRESTART, Build, started, tiny_params

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}
COPIED = (
    "dvc.yaml",
    ".gitignore",
    "workflow/dvc_matrix.yaml",
    "workflow/schemas/params.schema.yaml",
    "pipeline_steps",
    "models",
)
METHOD = "mtpkdot"
AFTER_STUDENT = {"train_student", "evaluate", "report"}


def sh(cwd: Path, *cmd: str, timeout: int = 1800) -> str:
    out = subprocess.run(
        cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out.stdout


def project_params() -> dict:
    """params.yaml with the tiny demo settings, two modalities, one shard, one method."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    for section, values in tiny_params().items():
        params[section] = values if section == "datasets" else {**params[section], **values}
    params["datasets"]["biovid"]["modalities"] = ["video", "eda"]
    params["crop_faces"]["n_shards"] = 1
    params["train_student"]["methods"] = [METHOD]
    for stage in ("train_modality_teacher", "train_fusion_teacher", "align_teacher_pool"):
        params[stage]["epochs"] = 2
    params["train_student"]["epochs"] = 2
    return params


def start_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A git + DVC copy of the project on the tiny demo, `dvc repro` started on it."""
    root = tmp_path_factory.mktemp("dvc_project")
    ENV["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    for name in COPIED:
        src, dst = REPO_ROOT / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    (root / "params.yaml").write_text(yaml.safe_dump(project_params(), sort_keys=False))
    job_matrix.write(load_params(root / "params.yaml"), root)  # the project's folds and jobs
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    return Build.start(root, ["dvc", "repro"], dict(ENV), cwd=root)


PRESTART["dvc_project"] = start_build  # conftest starts it with the session's first test


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project built by `dvc repro` (see start_build), committed."""
    build = started("dvc_project", tmp_path_factory)
    out = build.wait(1800)
    assert out.returncode == 0, f"dvc repro\n{out.stdout[-8000:]}"
    root = build.workdir
    ENV["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "tiny demo, dvc repro")
    return root


def changed_stages(root: Path) -> set[str]:
    status = json.loads(sh(root, "dvc", "status", "--json").strip() or "{}")
    return {name.split("@")[0] for name in status}


def set_param(root: Path, section: str, key: str, value: object) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def lock_entries(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


@pytest.mark.slow  # builds the module's project: ~4 min on 2 busy cores
def test_a_student_param_change_reruns_only_the_student_and_what_follows(dvc_project):
    root = dvc_project
    assert changed_stages(root) == set()
    before = lock_entries(root)
    set_param(root, "train_student", "lr", 0.001)
    assert changed_stages(root) == {"train_student"}  # evaluate/report follow via their deps

    log = sh(root, "dvc", "repro")
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert {name.split("@")[0] for name in ran} == AFTER_STUDENT, log
    after = lock_entries(root)
    assert {n for n in after if n.startswith("train_student@")} <= ran
    untouched = {n for n in before if n not in ran}
    assert {n.split("@")[0] for n in untouched} >= {"train_modality_teacher", "align_teacher_pool"}
    assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}
    assert changed_stages(root) == set()
    sh(root, "git", "commit", "-q", "-am", "train_student.lr 0.001")


@pytest.mark.slow
def test_push_then_pull_restores_identical_bytes(dvc_project, tmp_path):
    root = dvc_project
    sh(root, "dvc", "remote", "add", "-f", "-d", "local", str(tmp_path / "remote"))
    sh(root, "dvc", "push")
    outputs = [
        Path("results/biovid/fold0/teachers/pool.pt"),
        Path(f"results/biovid/fold1/students/seed0/{METHOD}.pt"),
        Path(f"results/biovid/fold0/eval/seed0/{METHOD}.json"),
    ]
    original = {p: (root / p).read_bytes() for p in outputs}
    for p in outputs:
        (root / p).unlink()
    shutil.rmtree(root / ".dvc" / "cache")  # only the remote still has them
    sh(root, "dvc", "pull")
    assert {p: (root / p).read_bytes() for p in outputs} == original
    assert changed_stages(root) == set()


@pytest.mark.slow
def test_exp_run_with_a_student_param_lists_its_metrics(dvc_project):
    root = dvc_project
    sh(root, "dvc", "exp", "run", "-n", "lr-002", "--set-param", "train_student.lr=0.002")
    shown = json.loads(sh(root, "dvc", "exp", "show", "--json"))
    runs = [r for e in shown for x in e.get("experiments") or [] for r in x["revs"]]
    exp = next(r for r in runs if r["name"] == "lr-002")
    assert exp["data"]["params"]["params.yaml"]["data"]["train_student"]["lr"] == 0.002
    metrics = exp["data"]["metrics"]
    for fold in (0, 1):
        scores = metrics[f"results/biovid/fold{fold}/eval/seed0/{METHOD}.json"]["data"]
        assert 0.0 <= scores["accuracy"] <= 1.0
        assert "macro_f1" in scores
