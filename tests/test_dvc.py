"""DVC: each stage depends on its own params section only, so a changed student param makes
`dvc status` flag only the student stages (evaluate and report follow through their inputs).

A temporary copy of the project (git + dvc init) gets placeholder outputs recorded with
`dvc commit`, so no stage runs: this checks dvc.yaml's dependency wiring in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_steps.config import REPO_ROOT

ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


def sh(cwd: Path, *cmd: str) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def committed_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dvc_project")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, root / name)
    for name in ("pipeline_steps", "models"):
        shutil.copytree(REPO_ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    sh(root, "git", "init", "-q")
    sh(root, "dvc", "init", "-q")
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        outs = [Path(o.fs_path) for s in repo.index.stages for o in s.outs]
    for out in outs:  # placeholder outputs: directories (no suffix) hold one file
        if out.suffix:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(f"placeholder {out.name}\n")
        else:
            out.mkdir(parents=True, exist_ok=True)
            (out / "placeholder.txt").write_text("placeholder\n")
    sh(root, "dvc", "commit", "-f", "-q")
    return root


def changed_stages(root: Path) -> set[str]:
    status = json.loads(sh(root, "dvc", "status", "--json") or "{}")
    return {name.split("@")[0] for name in status}


def edit_params(root: Path, section: str, key: str, value) -> dict:  # noqa: ANN001
    path = root / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return original


@pytest.mark.slow  # ~2 min under load: dvc status over ~100 stages
def test_a_student_param_change_flags_only_the_student_stages(committed_project):
    assert changed_stages(committed_project) == set()
    original = edit_params(committed_project, "train_student", "lr", 0.001)
    try:
        assert changed_stages(committed_project) == {"train_student"}
    finally:
        (committed_project / "params.yaml").write_text(original)
