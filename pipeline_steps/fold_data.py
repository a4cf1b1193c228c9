"""Read one fold's inputs: index splits, labels, modality arrays, training-only normalisation.

Modality arrays are :class:`~pipeline_steps.shards.ShardArray` views: rows are read from the
shards when indexed, so a dataset does not have to fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline_steps.folds import split_ids
from pipeline_steps.layout import Layout
from pipeline_steps.qc import skipped_ids
from pipeline_steps.shards import ShardArray

if TYPE_CHECKING:  # pandas (and the pyarrow it loads) is imported where an index is read
    import pandas as pd

VIDEO = "video"


def load_index(layout: Layout) -> pd.DataFrame:
    """The index without the samples a feature step skipped (``qc_report.json``)."""
    if not layout.index.exists():
        raise FileNotFoundError(f"{layout.index}: index not found; run index_dataset first")
    import pandas as pd

    index = pd.read_parquet(layout.index)
    skipped = index["sample_id"].isin(skipped_ids(layout))
    if skipped.any():
        print(f"[qc] {int(skipped.sum())} sample(s) skipped by a feature step left out (qc_report)")
    return index[~skipped].reset_index(drop=True)


def video_shard_paths(params: dict, layout: Layout) -> list[Path]:
    return [layout.video_shard(i) for i in range(params["crop_faces"]["n_shards"])]


def modality_paths(params: dict, layout: Layout, modality: str) -> list[Path]:
    """The shard file(s) holding ``modality`` (video: the crop_faces shards)."""
    if modality == VIDEO:
        return video_shard_paths(params, layout)
    return [layout.physio_shard(modality)]


def modality_array(params: dict, layout: Layout, modality: str, ids: list[str]) -> ShardArray:
    """The per-sample arrays of ``modality`` for ``ids``, in that order, read lazily."""
    return ShardArray(modality_paths(params, layout, modality), ids)


@dataclass
class Splits:
    """Sample ids of one fold. The test ids are only ever read by ``evaluate``."""

    train: list[str]
    val: list[str]

    @classmethod
    def of(cls, index: pd.DataFrame, fold: int) -> Splits:
        train, val = split_ids(index, fold, "train"), split_ids(index, fold, "val")
        if not train or not val:
            raise ValueError(f"fold {fold}: empty train ({len(train)}) or val ({len(val)}) split")
        return cls(train, val)


@dataclass
class Normaliser:
    """Per-channel standardisation with statistics of the training samples only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train: np.ndarray | ShardArray, chunk_bytes: int = 64 << 20) -> Normaliser:
        """Mean and std (ddof 0) per channel: over samples and time for (N, C, L) arrays,
        over samples otherwise. Read in chunks of rows, merged in float64 (Chan et al.)."""
        if len(train) == 0:
            raise ValueError("cannot fit a normaliser on no training samples")
        axes = (0, 2) if train.ndim == 3 else (0,)
        row_bytes = max(1, int(np.prod(train.shape[1:])) * 8)
        step = max(1, chunk_bytes // row_bytes)
        count, mean, m2 = 0, 0.0, 0.0
        for start in range(0, len(train), step):
            block = np.asarray(train[start : start + step], dtype=np.float64)
            block_mean = block.mean(axis=axes, keepdims=True)
            n = block.size // block_mean.size
            block_m2 = ((block - block_mean) ** 2).sum(axis=axes, keepdims=True)
            delta = block_mean - mean
            total = count + n
            mean = mean + delta * (n / total)
            m2 = m2 + block_m2 + delta**2 * (count * n / total)
            count = total
        std = np.sqrt(m2 / count)
        return cls(mean[0].astype(np.float32), np.maximum(std[0], 1e-6).astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)

    def state(self) -> dict[str, torch.Tensor]:
        return {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> Normaliser:
        return cls(state["mean"].numpy(), state["std"].numpy())


def modality_embeddings(layout: Layout, fold: int, modalities: list[str], ids: list[str]):
    """Frozen modality-teacher embeddings stacked as (N, M, D), modalities in the given order."""
    from pipeline_steps.trainer import load_checkpoint

    stacked = []
    for modality in modalities:
        stored = load_checkpoint(layout.embeddings(fold, modality))
        pos = {s: i for i, s in enumerate(stored["sample_ids"])}
        stacked.append(stored["embeddings"][[pos[s] for s in ids]])
    return torch.stack(stacked, dim=1)
