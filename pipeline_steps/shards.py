"""Parquet shards passed between pipeline steps: one schema, one writer, one reader.

Every shard holds one row per sample. Columns:

========================  =========================================  ===========================
column                    Arrow type                                 meaning
========================  =========================================  ===========================
``sample_id``             string                                     joins across modalities
``<array column>``        fixed_size_list<T>[prod(shape)]            row-major array per sample
extra columns             float32 / int64 / string                   per-sample scalars (QC ...)
========================  =========================================  ===========================

The Arrow schema metadata (``mtpkdot.*`` keys, JSON-encoded values) carries
``schema_version``, ``modality``, ``array_column``, ``shape`` (per-sample shape), ``dtype``,
``units`` and any step-specific keys such as ``sample_rate_hz`` or ``fps``.
Shard kinds written by the pipeline:

* video (``crop_faces``): ``frames`` uint8, shape (T, H, W, 3), RGB face crops; extra column
  ``face_found_ratio`` (float32, share of sampled frames where a face was detected).
* physiology (``extract_physio``): ``signal`` float32, shape (C, L); metadata
  ``sample_rate_hz``, ``channels``, ``units``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline_steps.atomic import atomic_path

SCHEMA_VERSION = 1
_PREFIX = "mtpkdot."


class ShardError(ValueError):
    """A shard is missing, malformed or of another schema version."""


@dataclass
class Shard:
    """The content of one shard: ids, the stacked array and the metadata."""

    sample_ids: list[str]
    array: np.ndarray
    metadata: dict[str, Any]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sample_ids)


def write_shard(
    path: str | os.PathLike,
    sample_ids: list[str],
    array: np.ndarray,
    *,
    array_column: str,
    modality: str,
    metadata: dict[str, Any] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> None:
    """Write ``array`` (N, *shape) with one row per sample id to ``path`` atomically."""
    array = np.ascontiguousarray(array)
    if array.shape[0] != len(sample_ids):
        raise ShardError(f"{path}: {array.shape[0]} arrays for {len(sample_ids)} sample ids")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ShardError(f"{path}: refusing to write non-finite values in '{array_column}'")
    shape = list(array.shape[1:])
    width = int(np.prod(shape)) if shape else 1
    flat = pa.array(array.reshape(-1) if array.size else np.zeros(0, array.dtype))
    column = pa.FixedSizeListArray.from_arrays(flat, width)
    columns = {"sample_id": pa.array(sample_ids, pa.string()), array_column: column}
    for name, values in (extra or {}).items():
        columns[name] = pa.array(np.asarray(values))
    meta = {
        "schema_version": SCHEMA_VERSION,
        "modality": modality,
        "array_column": array_column,
        "shape": shape,
        "dtype": str(array.dtype),
        **(metadata or {}),
    }
    table = pa.table(columns).replace_schema_metadata(
        {f"{_PREFIX}{k}": json.dumps(v) for k, v in meta.items()}
    )
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a shard's metadata without loading its rows."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard not found")
    raw = pq.read_schema(path).metadata or {}
    meta = {
        k.decode()[len(_PREFIX) :]: json.loads(v)
        for k, v in raw.items()
        if k.decode().startswith(_PREFIX)
    }
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ShardError(
            f"{path}: shard schema version {version!r}, this code reads {SCHEMA_VERSION}; "
            "re-run the feature steps"
        )
    return meta


def _load(path: str | os.PathLike) -> Shard:
    """Load one whole shard (memory-mapped Arrow, converted to numpy)."""
    meta = read_metadata(path)
    table = pq.read_table(path, memory_map=True)
    ids = table.column("sample_id").to_pylist()
    column = table.column(meta["array_column"]).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    array = values.astype(meta["dtype"], copy=False).reshape((len(ids), *meta["shape"]))
    extra = {
        name: table.column(name).to_numpy()
        for name in table.column_names
        if name not in ("sample_id", meta["array_column"])
    }
    return Shard(ids, array, meta, extra)


def _select(shard: Shard, sample_ids: list[str], where: str) -> Shard:
    """Rows of ``shard`` for ``sample_ids``, in that order; every id must be present."""
    pos = {s: i for i, s in enumerate(shard.sample_ids)}
    missing = [s for s in sample_ids if s not in pos]
    if missing:
        raise ShardError(f"{where}: {len(missing)} sample ids not found, e.g. {missing[:3]}")
    order = np.array([pos[s] for s in sample_ids], dtype=np.int64)
    extra = {k: v[order] for k, v in shard.extra.items()}
    return Shard(list(sample_ids), shard.array[order], shard.metadata, extra)


def read_shard(path: str | os.PathLike, sample_ids: list[str] | None = None) -> Shard:
    """Read a shard (optionally only ``sample_ids``, in that order) into numpy arrays."""
    return read_shards([path], sample_ids)


def read_shards(paths: list[str | os.PathLike], sample_ids: list[str] | None = None) -> Shard:
    """Concatenate shards of one kind (e.g. the scattered crop_faces outputs)."""
    names = sorted(map(str, paths))
    if not names:
        raise ShardError("no shards given")
    parts = [_load(p) for p in names]
    meta = parts[0].metadata
    for name, part in zip(names, parts, strict=True):
        if part.metadata["shape"] != meta["shape"]:
            raise ShardError(f"{name}: shape {part.metadata['shape']} differs from {meta['shape']}")
    ids = [s for part in parts for s in part.sample_ids]
    array = np.concatenate([part.array for part in parts])
    extra = {k: np.concatenate([part.extra[k] for part in parts]) for k in parts[0].extra}
    merged = Shard(ids, array, meta, extra)
    return merged if sample_ids is None else _select(merged, sample_ids, ", ".join(names))
