"""On the tiny demo run: the finetune student trains its video encoder and the frozen one does
not; the pool's cached training outputs are cross-fitted; the alignment keeps a trained epoch;
teacher selection is not always the joint teacher; the report shows the teacher shares."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from pipeline_steps.align_teacher_pool import subject_parts
from pipeline_steps.layout import Layout
from pipeline_steps.student_model import load_video_teacher, load_visual_student
from tests.conftest import TINY

FOLDS = range(TINY["index_dataset"]["n_folds"])
LAYOUT = Layout("results", "biovid")


def test_subject_parts_cover_every_id_once_grouped_by_subject() -> None:
    index = pd.DataFrame(
        {"sample_id": [f"s{i}" for i in range(12)], "subject": [f"p{i % 5}" for i in range(12)]}
    )
    ids = index["sample_id"].tolist()[:10]
    parts = subject_parts(index, ids, 3, seed=0)
    assert sorted(i for p in parts for i in p) == sorted(ids)
    subjects = [set(index.set_index("sample_id").loc[p, "subject"]) for p in parts]
    assert all(a.isdisjoint(b) for i, a in enumerate(subjects) for b in subjects[i + 1 :])
    assert parts == subject_parts(index, ids, 3, seed=0)
    with pytest.raises(ValueError, match="cross_fit is 6 but the fold has 5 training subjects"):
        subject_parts(index, ids, 6, seed=0)


@pytest.mark.slow
def test_cross_fitted_outputs_never_come_from_a_teacher_that_saw_the_sample(demo_run: Path):
    index = pd.read_parquet(demo_run / LAYOUT.index).set_index("sample_id")
    for fold in FOLDS:
        cache = torch.load(demo_run / LAYOUT.pool_outputs(fold), weights_only=True)
        split = index[f"split_{fold}"]
        assert len(cache["part_train_ids"]) == TINY["align_teacher_pool"]["cross_fit"]
        for sample, part in zip(cache["sample_ids"], cache["part"], strict=True):
            if split[sample] == "train":
                assert part >= 0, sample
                trained_on = cache["part_train_ids"][part]
                assert sample not in trained_on
                assert index.loc[sample, "subject"] not in set(index.loc[trained_on, "subject"])
            else:  # validation: the fold's pool, which trained on training samples only
                assert split[sample] == "val" and part == -1
        for trained_on in cache["part_train_ids"]:
            assert set(split[trained_on]) == {"train"}


@pytest.mark.slow
def test_alignment_keeps_a_trained_epoch(demo_run: Path):
    for fold in FOLDS:
        metrics = json.loads(
            (demo_run / LAYOUT.metrics(fold, "align_teacher_pool", "pool")).read_text()
        )
        assert metrics["best_epoch"] > 0, (fold, metrics)
        assert "val_objective" in metrics


@pytest.mark.slow
def test_selection_is_not_always_the_joint_teacher(demo_run: Path):
    shares = []
    for fold in FOLDS:
        result = json.loads((demo_run / LAYOUT.evaluation(fold, "mtpkdot", 0)).read_text())
        fold_shares = {k: v for k, v in result.items() if k.startswith("teacher_share_")}
        assert sum(fold_shares.values()) == pytest.approx(1.0)
        shares.append(fold_shares)
        pkdot = json.loads((demo_run / LAYOUT.evaluation(fold, "pkdot", 0)).read_text())
        assert pkdot["teacher_share_joint"] == 1.0
    assert min(s["teacher_share_joint"] for s in shares) < 1.0, shares
    report = (demo_run / LAYOUT.report_md).read_text()
    assert "Share of training batches each pool teacher taught" in report


def encoder_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def max_change(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.slow
def test_finetune_trains_the_encoder_and_frozen_does_not(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from pipeline_steps import evaluate, train_student

    work = tmp_path / "copy"
    shutil.copytree(demo_run, work, ignore=shutil.ignore_patterns("mlartifacts"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    teacher = encoder_state(load_video_teacher(LAYOUT, 0)[0].encoder)
    finetuned = load_visual_student(LAYOUT, 0, "mtpkdot", 0)
    assert torch.load(LAYOUT.student(0, "mtpkdot", 0), weights_only=True)["student"] == "finetune"
    assert max_change(teacher, encoder_state(finetuned.encoder)) > 0
    params_file = work / ".snakemake/mtpkdot/params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["train_student"]["student"] = "frozen"
    params_file.write_text(yaml.safe_dump(params))
    args = ["--params", str(params_file), "--dataset", "biovid", "--fold", "0"]
    train_student.main([*args, "--method", "visual_only"])
    saved = torch.load(LAYOUT.student(0, "visual_only", 0), weights_only=True)
    assert saved["student"] == "frozen"
    assert not any(k.startswith("encoder.") for k in saved["state_dict"])
    frozen = load_visual_student(LAYOUT, 0, "visual_only", 0)
    assert max_change(teacher, encoder_state(frozen.encoder)) == 0
    evaluate.main([*args, "--method", "visual_only"])  # the frozen student deploys from frames
    result = json.loads(LAYOUT.evaluation(0, "visual_only", 0).read_text())
    assert result["n"] > 0 and 0.0 <= result["accuracy"] <= 1.0


@pytest.mark.slow
def test_every_method_starts_from_the_same_student(demo_run: Path):
    """Same initial weights for every method: identical similarity snapshots at step 0."""
    import numpy as np

    for fold in FOLDS:
        starts = [
            np.load(demo_run / LAYOUT.student_similarity(fold, m, 0))["student"][0]
            for m in ("visual_only", "pkd", "pkdot", "mtpkdot")
        ]
        for other in starts[1:]:
            np.testing.assert_array_equal(starts[0], other)
