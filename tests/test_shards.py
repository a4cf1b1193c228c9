"""Parquet shard schema: round trip, metadata, version check, refusal of bad data."""

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_steps import shards
from pipeline_steps.shards import ShardArray, ShardError, read_shard, read_shards, write_shard


def test_round_trip_with_metadata_and_extra(tmp_path: Path):
    arr = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    path = tmp_path / "eda.parquet"
    write_shard(
        path,
        ["a", "b", "c"],
        arr,
        array_column="signal",
        modality="eda",
        metadata={"sample_rate_hz": 64},
        extra={"q": np.array([1.0, 2.0, 3.0], np.float32)},
    )
    shard = read_shard(path)
    assert shard.sample_ids == ["a", "b", "c"]
    np.testing.assert_array_equal(shard.array, arr)
    assert shard.metadata["sample_rate_hz"] == 64 and shard.metadata["shape"] == [2, 4]
    np.testing.assert_array_equal(shard.extra["q"], [1.0, 2.0, 3.0])
    schema = pq.read_schema(path)
    field_type = schema.field("signal").type
    assert pa.types.is_fixed_size_list(field_type) and field_type.list_size == 8
    assert field_type.value_type == pa.float32()


def test_selection_order_and_concatenation(tmp_path: Path):
    a, b = tmp_path / "v-0.parquet", tmp_path / "v-1.parquet"
    write_shard(a, ["x", "y"], np.array([[1], [2]], np.uint8), array_column="f", modality="video")
    write_shard(b, ["z"], np.array([[3]], np.uint8), array_column="f", modality="video")
    merged = read_shards([b, a], ["z", "x"])
    assert merged.sample_ids == ["z", "x"]
    assert merged.array[:, 0].tolist() == [3, 1]
    with pytest.raises(ShardError, match="not found"):
        read_shards([a], ["nope"])


def test_non_finite_values_are_refused(tmp_path: Path):
    arr = np.array([[np.nan]], np.float32)
    with pytest.raises(ShardError, match="non-finite"):
        write_shard(tmp_path / "x.parquet", ["a"], arr, array_column="s", modality="eda")
    assert not list(tmp_path.iterdir()), "a refused shard must leave no file behind"


def test_other_schema_version_is_refused(tmp_path: Path):
    path = tmp_path / "x.parquet"
    write_shard(path, ["a"], np.zeros((1, 2), np.float32), array_column="s", modality="eda")
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"mtpkdot.schema_version"] = json.dumps(99).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(ShardError, match="schema version"):
        read_shard(path)


# --- lazy reader -----------------------------------------------------------------------------


def _two_shards(tmp_path: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Two video-like shards of 7 + 5 rows (uint8 (2, 3, 4)) with several row groups each."""
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (12, 2, 3, 4), dtype=np.uint8)
    ids = [f"s{i:02d}" for i in range(12)]
    paths = [tmp_path / "v-0.parquet", tmp_path / "v-1.parquet"]
    ratio = np.linspace(0, 1, 12, dtype=np.float32)
    for path, part in zip(paths, (slice(0, 7), slice(7, 12)), strict=True):
        table_args = dict(array_column="frames", modality="video", metadata={"fps": 2.0})
        write_shard(path, ids[part], arr[part], **table_args, extra={"q": ratio[part]})
    return paths, arr, ids


def test_lazy_reader_matches_the_eager_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 48)  # 2 rows per row group
    paths, arr, ids = _two_shards(tmp_path)
    assert pq.ParquetFile(paths[0]).metadata.num_row_groups == 4
    order = ["s09", "s01", "s11", "s00", "s07", "s06"]
    lazy = ShardArray(paths[::-1], order)
    eager = read_shards(paths, order)
    assert lazy.sample_ids == eager.sample_ids == order
    assert lazy.shape == eager.array.shape == (6, 2, 3, 4) and lazy.dtype == np.uint8
    assert len(lazy) == 6 and lazy.ndim == 4 and lazy.metadata == eager.metadata
    np.testing.assert_array_equal(lazy[:], eager.array)
    np.testing.assert_array_equal(np.asarray(lazy), eager.array)
    np.testing.assert_array_equal(lazy.extra["q"], eager.extra["q"])
    for key in (3, -1, slice(1, 5), slice(None, None, -2), np.array([5, 0, 0, 2])):
        np.testing.assert_array_equal(lazy[key], eager.array[key], err_msg=str(key))
    np.testing.assert_array_equal(lazy[[4, 1]], eager.array[[4, 1]])
    mask = np.array([True, False, True, False, False, True])
    np.testing.assert_array_equal(lazy[mask], eager.array[mask])
    np.testing.assert_array_equal(lazy[2:4, 1, :, 0], eager.array[2:4, 1, :, 0])
    np.testing.assert_array_equal(lazy[2, 1], eager.array[2, 1])
    assert lazy[np.array([], dtype=np.int64)].shape == (0, 2, 3, 4)
    np.testing.assert_array_equal(ShardArray(paths)[:], arr)  # all rows, file order
    with pytest.raises(IndexError):
        lazy[6]
    with pytest.raises(IndexError):
        lazy[np.array([0, 7])]
    uncached = ShardArray(paths, order, cache_bytes=0)
    np.testing.assert_array_equal(uncached[[5, 1, 5]], eager.array[[5, 1, 5]])
    assert not uncached._cache
    small = ShardArray(paths, order, cache_bytes=2 * 48)  # two row groups
    for key in (slice(None), np.array([4, 0, 3, 1, 5, 2]), slice(None, None, -1)):
        np.testing.assert_array_equal(small[key], eager.array[key])
        assert len(small._cache) <= 2
    restored = pickle.loads(pickle.dumps(lazy))  # DataLoader workers
    np.testing.assert_array_equal(restored[[1, 2]], eager.array[[1, 2]])


def test_lazy_reader_checks(tmp_path: Path):
    paths, _, _ = _two_shards(tmp_path)
    with pytest.raises(ShardError, match=r"2 sample ids not found, e\.g\. \['x', 'y'\]"):
        ShardArray(paths, ["s00", "x", "y"])
    with pytest.raises(ShardError, match="no shards given"):
        ShardArray([])
    other = tmp_path / "other.parquet"
    write_shard(other, ["o"], np.zeros((1, 5), np.uint8), array_column="frames", modality="video")
    with pytest.raises(ShardError, match=r"v-0\.parquet: shape \[2, 3, 4\] differs from \[5\]"):
        ShardArray([paths[0], other])
    table = pq.read_table(paths[1])
    meta = {**table.schema.metadata, b"mtpkdot.schema_version": json.dumps(2).encode()}
    pq.write_table(table.replace_schema_metadata(meta), paths[1])
    with pytest.raises(ShardError, match=r"v-1\.parquet: shard schema version 2"):
        ShardArray(paths)


def _peak_arrow_bytes(read) -> tuple[int, np.ndarray]:
    """Peak Arrow allocation while ``read()`` runs, and its result copied to plain numpy.

    Every Arrow object made under the temporary pool is freed before the pool is.
    """
    default = pa.default_memory_pool()
    pool = pa.proxy_memory_pool(default)
    pa.set_memory_pool(pool)
    try:
        result = np.array(read(), copy=True)
    finally:
        pa.set_memory_pool(default)
    return pool.max_memory(), result


def _lazy_rows(path: Path, rows: list[int]) -> np.ndarray:
    lazy = ShardArray([path], cache_bytes=0)
    out = lazy[rows]
    lazy.close()
    return out


def test_lazy_reader_reads_only_the_rows_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Indexing 3 rows of a 16 MiB shard allocates about one row group, not the column."""
    monkeypatch.setattr(shards, "ROW_GROUP_BYTES", 64 * 1024)  # one row per group
    n, row = 256, 64 * 1024
    path = tmp_path / "big.parquet"
    big = np.random.default_rng(1).integers(0, 256, (n, row), dtype=np.uint8)
    write_shard(path, [f"s{i}" for i in range(n)], big, array_column="x", modality="video")
    lazy_peak, rows = _peak_arrow_bytes(lambda: _lazy_rows(path, [200, 3, 50]))
    eager_peak, _ = _peak_arrow_bytes(lambda: read_shard(path).array)
    np.testing.assert_array_equal(rows, big[[200, 3, 50]])
    assert eager_peak >= n * row  # the measure sees a whole-column read
    assert lazy_peak < 32 * row, (lazy_peak, eager_peak)  # measured ~10 rows
