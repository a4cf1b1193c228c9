"""Face-clip batches from the video shards for a student that trains its video encoder.

Rows are read lazily from the memory-mapped Parquet shards (``ShardDataset``), one call per
batch, by ``DataLoader`` workers (the job's threads minus the training process) into pinned
memory on CUDA. The batch order is the trainer's (``trainer.fit`` ``fetch``), so every method
sees the same clips in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline_steps.fold_data import VIDEO
from pipeline_steps.shard_dataset import Item, ShardDataset
from pipeline_steps.trainer import eval_batches


def loader_workers() -> int:
    """DataLoader workers: the job's threads (OMP_NUM_THREADS, set from the rule's
    ``threads``) less the one that trains; 0 reads in the training process."""
    return max(0, int(os.environ.get("OMP_NUM_THREADS", "1") or 1) - 1)


def _stack(items: list[Item]) -> torch.Tensor:
    return torch.stack([item[VIDEO] for item in items])


class FrameBatches:
    """Clips (B, T, H, W, 3) uint8 of ``ids`` from the video shards ``paths``."""

    def __init__(self, paths: list[Path], ids: list[str], device: torch.device) -> None:
        self.dataset = ShardDataset({VIDEO: paths}, ids)
        self.pin = device.type == "cuda"

    def __len__(self) -> int:
        return len(self.dataset)

    def _loader(self, batches: list[list[int]]) -> DataLoader:
        workers = loader_workers()
        return DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=workers,
            pin_memory=self.pin,
            collate_fn=_stack,
            persistent_workers=False,
            prefetch_factor=2 if workers else None,
            generator=torch.Generator().manual_seed(0),  # leaves the global RNG untouched
        )

    def __call__(self, batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``trainer.fit``'s fetch: (idx, clips) for each index batch, in the given order."""
        yield from zip(batches, self._loader([b.tolist() for b in batches]), strict=True)

    def in_order(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Every clip once, in id order (evaluation: no sample dropped)."""
        batches = [list(range(n)[sl]) for n in [len(self)] for sl in eval_batches(n, batch_size)]
        yield from self._loader(batches)
