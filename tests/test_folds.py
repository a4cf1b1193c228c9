"""Subject-independent folds with validation subjects."""

import pandas as pd
import pytest

from pipeline_steps.affwild2 import assign_split
from pipeline_steps.folds import assign_folds, folds_share_test_set, split_ids


def index(n_subjects: int = 8, per_subject: int = 4) -> pd.DataFrame:
    rows = [
        {"sample_id": f"s{s}-{i}", "subject": f"s{s}", "label": i % 2}
        for s in range(n_subjects)
        for i in range(per_subject)
    ]
    return pd.DataFrame(rows)


def test_folds_group_subjects_and_carve_validation():
    out = assign_folds(index(), n_folds=4, n_val_subjects=1, seed=0)
    assert sorted(out["test_fold"].unique()) == [0, 1, 2, 3]
    for k in range(4):
        per_subject = out.groupby("subject")[f"split_{k}"].nunique()
        assert (per_subject == 1).all(), "a subject is split across train/val/test"
        test_subjects = set(out.loc[out[f"split_{k}"] == "test", "subject"])
        val_subjects = set(out.loc[out[f"split_{k}"] == "val", "subject"])
        train_subjects = set(out.loc[out[f"split_{k}"] == "train", "subject"])
        assert test_subjects == set(out.loc[out["test_fold"] == k, "subject"])
        assert len(val_subjects) == 1
        assert not (val_subjects & test_subjects) and not (train_subjects & test_subjects)
        assert train_subjects | val_subjects | test_subjects == set(out["subject"])


def test_every_subject_is_tested_exactly_once():
    out = assign_folds(index(10), n_folds=3, n_val_subjects=2, seed=1)
    tested = [set(out.loc[out[f"split_{k}"] == "test", "subject"]) for k in range(3)]
    assert sum(len(t) for t in tested) == 10
    assert set().union(*tested) == set(out["subject"])


def test_folds_are_reproducible_from_the_seed():
    a = assign_folds(index(), 4, 1, seed=3)
    b = assign_folds(index(), 4, 1, seed=3)
    c = assign_folds(index(), 4, 1, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["test_fold"].equals(c["test_fold"])


def test_too_few_subjects_is_an_error():
    with pytest.raises(ValueError, match="subjects"):
        assign_folds(index(3), n_folds=4, n_val_subjects=1, seed=0)
    with pytest.raises(ValueError, match="validation"):
        assign_folds(index(4), n_folds=2, n_val_subjects=2, seed=0)


def test_split_ids_checks_its_arguments():
    out = assign_folds(index(), 4, 1, seed=0)
    assert len(split_ids(out, 0, "test")) == 8
    with pytest.raises(ValueError):
        split_ids(out, 0, "holdout")
    with pytest.raises(ValueError):
        split_ids(out, 9, "train")


def test_folds_share_test_set_only_when_every_fold_tests_the_same_samples():
    assert not folds_share_test_set(assign_folds(index(), n_folds=4, n_val_subjects=1, seed=0))
    windows = index(8).assign(set=["Validation_Set"] * 8 + ["Train_Set"] * 24)
    assert folds_share_test_set(assign_split(windows, 0.2, seed=0, n_folds=3))
    assert not folds_share_test_set(assign_split(windows, 0.2, seed=0, n_folds=1))
