"""Per-unit test scores of every student, from the evaluation predictions CSVs.

The unit is what the paired comparison treats as independent (:mod:`pipeline_steps.paired_stats`):

- classification (BioVid layout): the test **subject**; score = accuracy over that subject's
  test clips;
- regression (Aff-Wild2 layout): the test **video**; score = mean of the valence and arousal
  CCC over the video's annotated frames (-5 masked), each window's prediction given to its
  frames exactly as ``evaluate`` scores a fold (:meth:`pipeline_steps.tasks.Task.metrics`).

One row per (method, fold, seed, unit). A predictions file that does not hold exactly the
fold's test samples is an error naming the file (evaluation never drops samples). A video with
fewer than two annotated frames in a dimension has no CCC: it is skipped, and the skip is
returned so that the report lists it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from pipeline_steps.folds import split_ids
from pipeline_steps.layout import Layout
from pipeline_steps.tasks import DIMENSIONS, UNIT, Task


@dataclass
class UnitScores:
    """``scores``: columns method, fold, seed, unit, score, n (samples); ``skipped``: notes."""

    unit: str
    scores: pd.DataFrame
    skipped: list[str] = field(default_factory=list)


def classification_units(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy over each subject's clips: columns unit, score, n."""
    correct = (predictions["pred"] == predictions["label"]).astype(float)
    grouped = correct.groupby(predictions["subject"].astype(str), sort=True)
    return pd.DataFrame(
        {"unit": grouped.mean().index, "score": grouped.mean().values, "n": grouped.size().values}
    )


def regression_units(
    predictions: pd.DataFrame, index: pd.DataFrame, task: Task
) -> tuple[pd.DataFrame, list[str]]:
    """Mean CCC (valence, arousal) over each video's annotated frames: columns unit, score, n;
    and the videos skipped for lack of annotated frames."""
    rows, skipped = [], []
    for video, group in predictions.groupby(predictions["video"].astype(str), sort=True):
        pred = torch.as_tensor(group[[f"pred_{d}" for d in DIMENSIONS]].to_numpy()).float()
        target = task.targets(index, group["sample_id"].tolist())
        try:
            score = task.metrics(pred, target)["ccc_mean"]
        except ValueError as err:  # fewer than 2 annotated frames: no CCC
            skipped.append(f"video {video}: {err}")
            continue
        rows.append({"unit": video, "score": score, "n": len(group)})
    return pd.DataFrame(rows, columns=["unit", "score", "n"]), skipped


def read_predictions(layout: Layout, index: pd.DataFrame, fold: int, method: str, seed: int):  # noqa: ANN201
    """The predictions CSV of one student, checked to hold exactly the fold's test samples and
    the unit column."""
    path = layout.predictions(fold, method, seed)
    if not path.exists():
        raise FileNotFoundError(f"{path}: predictions missing; run evaluate first")
    frame = pd.read_csv(path)
    expected = set(split_ids(index, fold, "test"))
    got = set(frame["sample_id"]) if "sample_id" in frame else set()
    if got != expected or len(frame) != len(expected):
        raise ValueError(
            f"{path}: {len(frame)} rows for the fold's {len(expected)} test samples "
            f"({len(expected - got)} missing, {len(got - expected)} not in the test split)"
        )
    return path, frame


def unit_scores(
    layout: Layout,
    index: pd.DataFrame,
    task: Task,
    methods: Sequence[str],
    n_folds: int,
    seeds: Sequence[int],
) -> UnitScores:
    """Per-unit scores of every method, fold and seed (all predictions must be present)."""
    unit = UNIT[task.name]
    frames, skipped = [], []
    for method in methods:
        for fold in range(n_folds):
            for seed in seeds:
                path, predictions = read_predictions(layout, index, fold, method, seed)
                if unit not in predictions:
                    raise ValueError(f"{path}: no '{unit}' column (rerun evaluate)")
                if task.is_classification:
                    units = classification_units(predictions)
                else:
                    units, skips = regression_units(predictions, index, task)
                    skipped += [f"{method}, fold {fold}, seed {seed}: {s}" for s in skips]
                frames.append(units.assign(method=method, fold=fold, seed=seed))
    columns = ["method", "fold", "seed", "unit", "score", "n"]
    return UnitScores(unit, pd.concat(frames, ignore_index=True)[columns], skipped)
