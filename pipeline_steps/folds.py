"""Subject-independent folds with validation subjects carved from each training part."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "val", "test")


def _deal_subjects(index: pd.DataFrame, subjects: list[str], n_folds: int, seed: int) -> dict:
    """Subject -> fold: stratified by class, grouped by subject, balanced in subjects.

    Subjects are taken in a seeded random order; each goes to one of the folds that have the
    fewest subjects so far, choosing among those the fold whose class distribution gets
    closest to the overall one (a greedy stratified group k-fold). Reproducible from ``seed``.
    """
    import pandas as pd

    stratify = "label" in index.columns
    counts = (
        pd.crosstab(index["subject"], index["label"]).reindex(subjects).to_numpy(dtype=float)
        if stratify
        else np.ones((len(subjects), 1))
    )
    overall = counts.sum(axis=0) / counts.sum()
    fold_counts = np.zeros((n_folds, counts.shape[1]))
    fold_sizes = np.zeros(n_folds, dtype=int)
    fold_of = {}
    for j in np.random.default_rng(seed).permutation(len(subjects)):
        open_folds = np.flatnonzero(fold_sizes == fold_sizes.min())
        best, best_cost = open_folds[0], np.inf
        for f in open_folds:
            after = fold_counts[f] + counts[j]
            cost = float(np.sum((after / after.sum() - overall) ** 2))
            if cost < best_cost - 1e-12:
                best, best_cost = f, cost
        fold_of[subjects[j]] = int(best)
        fold_counts[best] += counts[j]
        fold_sizes[best] += 1
    return fold_of


def assign_folds(
    index: pd.DataFrame, n_folds: int, n_val_subjects: int, seed: int, loso: bool = False
) -> pd.DataFrame:
    """Add ``test_fold`` and ``split_<k>`` (train/val/test) columns, grouped by subject.

    Every fold has whole subjects only (no subject in two splits of one fold); with a
    ``label`` column the folds are also stratified by class (see :func:`_deal_subjects`).
    ``loso``: one fold per subject (``n_folds`` is ignored). For fold k, the validation subjects
    are the first ``n_val_subjects`` of the remaining subjects in a fold-specific shuffled
    order; the test fold is never used for model selection.
    """
    subjects = sorted(index["subject"].unique())
    if loso:
        n_folds = len(subjects)
    if len(subjects) < n_folds:
        raise ValueError(f"{len(subjects)} subjects cannot fill {n_folds} subject-grouped folds")
    if len(subjects) - len(subjects) // n_folds - 1 < n_val_subjects + 1:
        raise ValueError(
            f"{len(subjects)} subjects leave too few training subjects for "
            f"{n_val_subjects} validation subjects per fold"
        )
    fold_of = _deal_subjects(index, subjects, n_folds, seed)
    out = index.copy()
    out["test_fold"] = out["subject"].map(fold_of).astype("int64")
    for k in range(n_folds):
        rest = [s for s in subjects if fold_of[s] != k]
        val = set(np.random.default_rng([seed, k]).permutation(rest)[:n_val_subjects])
        out[f"split_{k}"] = np.where(
            out["test_fold"] == k, "test", np.where(out["subject"].isin(val), "val", "train")
        )
    return out


def n_folds_of(index: pd.DataFrame) -> int:
    """Number of folds stored in an index (its ``split_<k>`` columns)."""
    return sum(1 for c in index.columns if c.startswith("split_"))


def folds_share_test_set(index: pd.DataFrame) -> bool:
    """Whether every fold of an index tests on the same samples (Aff-Wild2: its Validation_Set),
    so that a spread over folds is not a spread over test subjects."""
    tests = [index[f"split_{k}"] == "test" for k in range(n_folds_of(index))]
    return len(tests) > 1 and all(t.equals(tests[0]) for t in tests[1:])


def split_ids(index: pd.DataFrame, fold: int, split: str) -> list[str]:
    """Sample ids of one split of one fold, in index order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    column = f"split_{fold}"
    if column not in index.columns:
        raise ValueError(f"fold {fold} is not in the index (has {column!r}? no)")
    return index.loc[index[column] == split, "sample_id"].tolist()
