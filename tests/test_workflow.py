"""Orchestration checks: Snakemake lint/format, SLURM profile dry run, and dvc.yaml == DAG."""

import copy
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline_steps import job_matrix
from pipeline_steps.config import REPO_ROOT, load_params, validate_params
from tests.conftest import snakemake, tiny_params, write_project

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


def test_dvc_job_lists_are_up_to_date():
    """workflow/dvc_matrix.yaml and dvc.yaml's report fold list match params.yaml."""
    stale = job_matrix.stale_files(load_params(REPO_ROOT / "params.yaml"), REPO_ROOT)
    assert stale == [], f"{stale} stale: run python -m pipeline_steps.job_matrix"


def dvc_copy(tmp_path: Path) -> Path:
    """dvc.yaml and its job lists in a scratch DVC repo (no git)."""
    (tmp_path / "workflow").mkdir()
    for name in ("dvc.yaml", "workflow/dvc_matrix.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    return tmp_path


def test_changed_folds_make_the_job_lists_stale_until_regenerated(tmp_path):
    root = dvc_copy(tmp_path)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["index_dataset"]["n_folds"] = raw["index_dataset"]["n_folds"] + 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    assert job_matrix.stale_files(params, root) == ["workflow/dvc_matrix.yaml", "dvc.yaml"]
    job_matrix.write(params, root)
    assert job_matrix.stale_files(params, root) == []
    from dvc.repo import Repo

    n = raw["index_dataset"]["n_folds"]
    with Repo(str(root)) as repo:
        stages = {s.name: s for s in repo.index.stages}
    assert {a for a in stages if a.startswith("train_fusion_teacher@")} == {
        f"train_fusion_teacher@{d}-{k}" for d in raw["run"]["datasets"] for k in range(n)
    }
    report_deps = {part for d in stages["report@biovid"].deps for part in Path(d.def_path).parts}
    assert {f"fold{k}" for k in range(n)} <= report_deps


def test_student_seeds_multiply_student_jobs_only(tmp_path):
    """Two student seeds: twice the train_student and evaluate jobs (Snakemake and DVC), the
    same teacher jobs, and the report depends on every seed's evaluations."""
    one = tiny_params()
    two = tiny_params()
    two["run"]["seeds"] = [0, 1]
    matrices = [job_matrix.job_matrix(validate_params(p)) for p in (one, two)]
    for stage in matrices[0]:
        factor = 2 if stage in ("train_student", "evaluate") else 1
        assert len(matrices[1][stage]) == factor * len(matrices[0][stage]), stage
    assert matrices[1]["train_student"]["biovid-1-mtpkdot-s1"] == {
        "dataset": "biovid",
        "fold": 1,
        "method": "mtpkdot",
        "seed": 1,
    }
    deps = job_matrix.report_deps_lines(validate_params(two), "")
    assert "- ${run.results_dir}/biovid/fold1/eval/seed1" in deps
    counts = []
    for params in (one, two):
        work = write_project(tmp_path / f"seeds{len(params['run'].get('seeds', [0]))}", params)
        dry = snakemake(work, "-n", "--forceall", "--quiet", "rules")
        assert dry.returncode == 0, dry.stderr
        counts.append(
            {
                m[1]: int(m[2])
                for m in re.finditer(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.MULTILINE)
            }
        )
    assert {"train_modality_teacher", "align_teacher_pool", "train_student"} <= set(counts[0])
    for rule, n in counts[0].items():
        factor = 2 if rule in ("train_student", "evaluate") else 1
        if rule != "total":
            assert counts[1][rule] == factor * n, (rule, counts)


def test_loso_fold_counts(tmp_path):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["index_dataset"]["loso"] = True
    root = tmp_path / "biovid"
    root.mkdir()
    rows = ["subject_id\tsubject_name\tclass_id\tclass_name\tsample_id\tsample_name"]
    for i, (subject, cls) in enumerate(
        [("s1", "BL1"), ("s2", "PA4"), ("s3", "PA1"), ("s1", "PA4")]
    ):
        rows.append(f"{i}\t{subject}\t0\t{cls}\t{i}\t{subject}-{cls}-{i:03d}")
    (root / "samples.csv").write_text("\n".join(rows) + "\n")
    raw["datasets"]["mine"] = {**raw["datasets"]["biovid"], "demo": False, "root": str(root)}
    raw["datasets"]["gone"] = {**raw["datasets"]["mine"], "root": str(tmp_path / "missing")}
    params = validate_params(raw)
    assert job_matrix.folds(params, "biovid") == list(range(raw["make_demo_data"]["n_subjects"]))
    assert job_matrix.n_folds(params, "mine") == 2  # s3 has no BL1/PA4 sample
    assert job_matrix.n_folds(params, "affwild2") == raw["index_dataset"]["n_folds"]
    with pytest.raises(job_matrix.JobMatrixError, match="samples.csv"):
        job_matrix.n_folds(params, "gone")


def test_snakemake_dag_has_one_fold_per_subject_with_loso(tmp_path):
    params = tiny_params()
    params["index_dataset"]["loso"] = True
    workdir = write_project(tmp_path / "loso", params)
    out = snakemake(workdir, "-n", "--quiet", "rules")
    assert out.returncode == 0, out.stdout + out.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out.stdout + out.stderr, re.MULTILINE))
    n = params["make_demo_data"]["n_subjects"]
    assert int(counts["train_fusion_teacher"]) == n
    assert int(counts["evaluate"]) == n * len(
        load_params(REPO_ROOT / "params.yaml")["train_student"]["methods"]
    )


def test_merge_config_is_snakemakes_configfile_merge():
    from snakemake.utils import update_config

    from pipeline_steps.config import merge_config

    base = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((REPO_ROOT / "workflow" / "evidence.yaml").read_text())
    expected = copy.deepcopy(base)
    update_config(expected, overlay)
    assert merge_config(base, overlay) == expected
    assert base == yaml.safe_load((REPO_ROOT / "params.yaml").read_text())  # not modified


def test_apply_config_gives_dvc_the_evidence_jobs(tmp_path, monkeypatch):
    for name in ("params.yaml", "dvc.yaml", "workflow/dvc_matrix.yaml", "workflow/evidence.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    job_matrix.main(["--apply", "workflow/evidence.yaml"])
    params = load_params(tmp_path / "params.yaml")
    assert params["run"]["datasets"] == ["biovid_latent", "biovid_label"]
    assert params["datasets"]["biovid"]["root"] == "data/biovid_demo"  # the rest is kept
    jobs = yaml.safe_load((tmp_path / "workflow" / "dvc_matrix.yaml").read_text())["jobs"]
    assert "train_student@biovid_label-3-mtpkdot-s2" in {
        f"train_student@{k}" for k in jobs["train_student"]
    }
    assert "${run.results_dir}/biovid_label/fold3/eval/seed2" in (tmp_path / "dvc.yaml").read_text()
    assert job_matrix.stale_files(params, tmp_path) == []
