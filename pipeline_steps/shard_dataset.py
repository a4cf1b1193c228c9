"""A torch ``Dataset`` over the pipeline's shards, read lazily (memory-mapped Parquet).

    ds = ShardDataset.for_dataset(params, "biovid", ["video", "eda"], sample_ids, targets)
    loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2)

Each item is a dict: one tensor per modality (video frames uint8 (T, H, W, 3), signals
float32 (C, L), as stored; schema in ``docs/data.md``), ``sample_id`` and, when targets are
given, ``target``. Rows are read from the shards when asked for (:class:`ShardArray`), so a
dataset larger than memory works; a ``DataLoader`` batch is read with one call per modality
(``__getitems__``). Modalities are joined by ``sample_id``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline_steps.config import dataset_params
from pipeline_steps.fold_data import modality_paths
from pipeline_steps.layout import layout_for
from pipeline_steps.shards import ShardArray

Item = dict[str, Any]


class ShardDataset(Dataset):
    """Samples ``sample_ids`` of one or more modalities' shards, joined by id, in that order.

    ``shards`` maps a modality name to its shard file(s); ``targets`` (one per sample id) and
    ``transform`` (applied to each item dict) are optional.
    """

    def __init__(
        self,
        shards: Mapping[str, Sequence[str | os.PathLike]],
        sample_ids: Sequence[str],
        targets: np.ndarray | torch.Tensor | None = None,
        transform: Callable[[Item], Item] | None = None,
    ) -> None:
        if not shards:
            raise ValueError("no modalities given")
        self.sample_ids = list(sample_ids)
        self.arrays = {name: ShardArray(paths, self.sample_ids) for name, paths in shards.items()}
        if targets is not None and len(targets) != len(self.sample_ids):
            raise ValueError(f"{len(targets)} targets for {len(self.sample_ids)} sample ids")
        self.targets = None if targets is None else torch.as_tensor(targets)
        self.transform = transform

    @classmethod
    def for_dataset(
        cls,
        params: dict,
        dataset: str,
        modalities: Sequence[str] | None = None,
        sample_ids: Sequence[str] | None = None,
        targets: np.ndarray | torch.Tensor | None = None,
        transform: Callable[[Item], Item] | None = None,
    ) -> ShardDataset:
        """The shards of ``dataset`` written by the pipeline (``results/<dataset>/features``);
        all configured modalities and all indexed samples unless given."""
        layout = layout_for(params, dataset)
        if modalities is None:
            modalities = dataset_params(params, dataset)["modalities"]
        if sample_ids is None:
            import pandas as pd

            sample_ids = pd.read_parquet(layout.index, columns=["sample_id"])["sample_id"].tolist()
        shards = {m: modality_paths(params, layout, m) for m in modalities}
        return cls(shards, sample_ids, targets, transform)

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> Item:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Item]:
        """Items at ``indices``, each modality read with one lazy call (DataLoader batches)."""
        rows = np.asarray(indices, dtype=np.int64)
        batch = {name: array[rows] for name, array in self.arrays.items()}
        items = []
        for k, i in enumerate(rows.tolist()):
            item: Item = {name: torch.from_numpy(values[k]) for name, values in batch.items()}
            item["sample_id"] = self.sample_ids[i]
            if self.targets is not None:
                item["target"] = self.targets[i]
            items.append(self.transform(item) if self.transform else item)
        return items
