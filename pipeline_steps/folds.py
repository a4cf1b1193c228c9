"""Subject-independent folds with validation subjects carved from each training part."""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def assign_folds(index: pd.DataFrame, n_folds: int, n_val_subjects: int, seed: int) -> pd.DataFrame:
    """Add ``test_fold`` and ``split_<k>`` (train/val/test) columns, grouped by subject.

    Subjects are shuffled with ``seed`` and dealt round-robin into folds, so every fold has
    whole subjects only (no subject in two splits of one fold). For fold k, the validation
    subjects are the first ``n_val_subjects`` of the remaining subjects in a fold-specific
    shuffled order.
    """
    subjects = sorted(index["subject"].unique())
    if len(subjects) < n_folds:
        raise ValueError(f"{len(subjects)} subjects cannot fill {n_folds} subject-grouped folds")
    if len(subjects) - len(subjects) // n_folds - 1 < n_val_subjects + 1:
        raise ValueError(
            f"{len(subjects)} subjects leave too few training subjects for "
            f"{n_val_subjects} validation subjects per fold"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(subjects))
    fold_of = {subjects[j]: pos % n_folds for pos, j in enumerate(order)}
    out = index.copy()
    out["test_fold"] = out["subject"].map(fold_of).astype("int64")
    for k in range(n_folds):
        rest = [s for s in subjects if fold_of[s] != k]
        val = set(np.random.default_rng([seed, k]).permutation(rest)[:n_val_subjects])
        out[f"split_{k}"] = np.where(
            out["test_fold"] == k, "test", np.where(out["subject"].isin(val), "val", "train")
        )
    return out


def split_ids(index: pd.DataFrame, fold: int, split: str) -> list[str]:
    """Sample ids of one split of one fold, in index order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    column = f"split_{fold}"
    if column not in index.columns:
        raise ValueError(f"fold {fold} is not in the index (has {column!r}? no)")
    return index.loc[index[column] == split, "sample_id"].tolist()
