"""Read one fold's inputs: index splits, labels, modality arrays, training-only normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline_steps.folds import split_ids
from pipeline_steps.layout import Layout
from pipeline_steps.shards import read_shard, read_shards

VIDEO = "video"


def load_index(layout: Layout) -> pd.DataFrame:
    if not layout.index.exists():
        raise FileNotFoundError(f"{layout.index}: index not found; run index_dataset first")
    return pd.read_parquet(layout.index)


def video_shard_paths(params: dict, layout: Layout) -> list:
    return [layout.video_shard(i) for i in range(params["crop_faces"]["n_shards"])]


def modality_array(params: dict, layout: Layout, modality: str, ids: list[str]) -> np.ndarray:
    """The per-sample arrays of ``modality`` for ``ids``, in that order."""
    if modality == VIDEO:
        return read_shards(video_shard_paths(params, layout), ids).array
    return read_shard(layout.physio_shard(modality), ids).array


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
    def fit(cls, train: np.ndarray) -> Normaliser:
        axes = (0, 2) if train.ndim == 3 else (0,)
        mean = train.mean(axis=axes, keepdims=True)[0]
        std = train.std(axis=axes, keepdims=True)[0]
        return cls(mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32))

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
