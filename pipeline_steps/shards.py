"""Parquet shards passed between pipeline steps: one schema, one writer, two readers.

The full description of every file between steps (index, video, physiology and audio shards:
columns, dtypes, units, rates, versions) is ``docs/data.md``.

Every shard holds one row per sample. Columns:

========================  =========================================  ===========================
column                    Arrow type                                 meaning
========================  =========================================  ===========================
``sample_id``             string                                     joins across modalities
``<array column>``        fixed_size_list<T>[prod(shape)]            row-major array per sample
extra columns             float32 / int64 / string                   per-sample scalars (QC ...)
========================  =========================================  ===========================

The Arrow schema metadata (``mtpkdot.*`` keys, JSON-encoded values) carries
``schema_version``, ``modality``, ``array_column``, ``shape`` (per-sample shape), ``dtype``
and step-specific keys such as ``units``, ``sample_rate_hz`` or ``fps``.
Shard kinds written by the pipeline:

* video (``crop_faces``): ``frames`` uint8, shape (T, H, W, 3), RGB face crops; extra column
  ``face_found_ratio`` (float32, share of detector calls that found a face).
* physiology (``extract_physio``): ``signal`` float32, shape (C, L); metadata
  ``sample_rate_hz``, ``channels``, ``units``.
* audio (``extract_audio``): ``logmel`` float32, shape (n_mels, columns), dB.

A version other than :data:`SCHEMA_VERSION` is refused by both readers (:func:`read_metadata`).

Rows are written in row groups of about :data:`ROW_GROUP_BYTES` so that :class:`ShardArray`
(the lazy reader the training steps use) can read a few samples without decoding a whole
file; :func:`read_shards` loads everything into numpy (small data, tests).
"""

from __future__ import annotations

import json
import operator
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline_steps.atomic import atomic_path

if TYPE_CHECKING:  # pyarrow is imported by the functions that read or write (0.15 CPU s)
    import pyarrow.parquet as pq

SCHEMA_VERSION = 1
_PREFIX = "mtpkdot."
ROW_GROUP_BYTES = 1 << 20
"""Target size of one Parquet row group (uncompressed array bytes): the unit a lazy read
decodes."""


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
    import pyarrow as pa
    import pyarrow.parquet as pq

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
    row_bytes = max(1, width * array.dtype.itemsize)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=max(1, ROW_GROUP_BYTES // row_bytes))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a shard's metadata without loading its rows."""
    import pyarrow.parquet as pq

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
    import pyarrow.parquet as pq

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


class ShardArray:
    """A lazy, read-only (N, *shape) view of the array column of one or more shards.

    Only the ``sample_id`` columns are read on opening; indexing by int, slice, integer or
    boolean array (or a tuple starting with one of these) memory-maps the files and decodes
    only the row groups holding the requested rows, returning numpy arrays in the requested
    order. ``sample_ids`` selects and orders rows (every id must be present); the per-sample
    ``extra`` columns (scalars) are read eagerly. Decoded row groups are kept in an LRU cache
    of at most ``cache_bytes`` (random training batches revisit them; 0 disables it).
    Picklable (files reopen in the new process), so it can sit in a
    ``torch.utils.data.Dataset`` used by ``DataLoader`` workers.
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        sample_ids: Sequence[str] | None = None,
        cache_bytes: int = 64 << 20,
    ) -> None:
        self.paths = sorted(map(Path, paths), key=str)
        if not self.paths:
            raise ShardError("no shards given")
        metas = [read_metadata(p) for p in self.paths]
        self.metadata = metas[0]
        for path, meta in zip(self.paths, metas, strict=True):
            for key in ("array_column", "shape", "dtype"):
                if meta[key] != self.metadata[key]:
                    raise ShardError(
                        f"{path}: {key} {meta[key]!r} differs from {self.metadata[key]!r} "
                        f"of {self.paths[0]}"
                    )
        self.column = self.metadata["array_column"]
        self.dtype = np.dtype(self.metadata["dtype"])
        self.row_shape = tuple(int(d) for d in self.metadata["shape"])
        import pyarrow.parquet as pq

        file_of, row_of, ids, extras = [], [], [], []
        for f, path in enumerate(self.paths):
            names = [n for n in pq.read_schema(path).names if n != self.column]
            small = pq.read_table(path, columns=names, memory_map=True)
            part_ids = small.column("sample_id").to_pylist()
            ids += part_ids
            file_of.append(np.full(len(part_ids), f, dtype=np.int64))
            row_of.append(np.arange(len(part_ids), dtype=np.int64))
            extras.append({n: small.column(n).to_numpy() for n in names if n != "sample_id"})
        self._file_of = np.concatenate(file_of)
        self._row_of = np.concatenate(row_of)
        pos = {s: i for i, s in enumerate(ids)}
        if len(pos) != len(ids):
            raise ShardError(f"{', '.join(map(str, self.paths))}: duplicate sample ids")
        self.extra = {k: np.concatenate([e[k] for e in extras]) for k in extras[0]}
        if sample_ids is not None:
            missing = [s for s in sample_ids if s not in pos]
            if missing:
                where = ", ".join(map(str, self.paths))
                raise ShardError(
                    f"{where}: {len(missing)} sample ids not found, e.g. {missing[:3]}"
                )
            order = np.array([pos[s] for s in sample_ids], dtype=np.int64)
            self._file_of, self._row_of = self._file_of[order], self._row_of[order]
            self.extra = {k: v[order] for k, v in self.extra.items()}
            ids = list(sample_ids)
        self.sample_ids: list[str] = ids
        self._files: dict[int, tuple[pq.ParquetFile, np.ndarray]] = {}
        self.cache_bytes = int(cache_bytes)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached = 0

    # --- array protocol -------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.sample_ids), *self.row_shape)

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __repr__(self) -> str:
        return f"ShardArray(shape={self.shape}, dtype={self.dtype}, files={len(self.paths)})"

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rows = self[key[0]] if key else self[:]
            if _is_int(key[0]):
                return rows[key[1:]]
            return rows[(slice(None), *key[1:])]
        if isinstance(key, slice):
            return self.take(np.arange(len(self))[key])
        if _is_int(key):
            i = operator.index(key)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} samples")
            return self.take(np.array([i % len(self)]))[0]
        positions = np.asarray(key)
        if positions.dtype == bool:
            if positions.shape != (len(self),):
                raise IndexError(f"boolean index of shape {positions.shape} for {len(self)} rows")
            positions = np.flatnonzero(positions)
        return self.take(positions)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` (ints, negatives count from the end) as (k, *shape)."""
        positions = np.asarray(positions)
        if positions.dtype.kind not in "iu" and positions.size:
            raise IndexError(f"rows must be indexed by integers, got {positions.dtype}")
        positions = positions.astype(np.int64).reshape(-1)
        n = len(self)
        if positions.size and (positions.min() < -n or positions.max() >= n):
            raise IndexError(f"index out of range for {n} samples")
        positions = positions % max(n, 1)
        out = np.empty((positions.size, *self.row_shape), dtype=self.dtype)
        files, rows = self._file_of[positions], self._row_of[positions]
        for f in np.unique(files):
            mine = np.flatnonzero(files == f)
            out[mine] = self._read_rows(int(f), rows[mine])
        return out

    def _read_rows(self, f: int, rows: np.ndarray) -> np.ndarray:
        """Rows of file ``f`` (in the given order), decoding only their row groups."""
        _, starts = self._file(f)
        groups = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        for g in np.unique(groups).tolist():
            mine = np.flatnonzero(groups == g)
            out[mine] = self._group(f, g)[rows[mine] - starts[g]]
        return out

    def _group(self, f: int, g: int) -> np.ndarray:
        """Row group ``g`` of file ``f`` as (rows, *shape), through a small LRU cache.

        Groups are decoded one at a time: decoding a list column allocates several times
        the group's bytes.
        """
        key = (f, g)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        parquet, _ = self._file(f)
        table = parquet.read_row_group(g, columns=[self.column], use_threads=False)
        values = [c.flatten().to_numpy(zero_copy_only=False) for c in table.column(0).chunks]
        flat = values[0] if len(values) == 1 else np.concatenate(values)
        block = flat.astype(self.dtype, copy=False).reshape((-1, *self.row_shape))
        self._cache[key] = block
        self._cached += block.nbytes
        while self._cached > self.cache_bytes and self._cache:
            self._cached -= self._cache.popitem(last=False)[1].nbytes
        return block

    def _file(self, f: int) -> tuple[pq.ParquetFile, np.ndarray]:
        if f not in self._files:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(self.paths[f], memory_map=True)
            meta = parquet.metadata
            sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
            self._files[f] = (parquet, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
        return self._files[f]

    def close(self) -> None:
        """Drop the open file handles and the cache (files reopen on the next read)."""
        for parquet, _ in self._files.values():
            parquet.close()
        self._files = {}
        self._cache.clear()
        self._cached = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_files": {}, "_cache": OrderedDict(), "_cached": 0}


def _is_int(key: Any) -> bool:
    try:
        operator.index(key)
    except TypeError:
        return False
    return not isinstance(key, np.ndarray) or key.ndim == 0
