"""Parquet shard schema: round trip, metadata, version check, refusal of bad data."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline_steps.shards import ShardError, read_shard, read_shards, write_shard


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
