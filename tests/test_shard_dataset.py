"""Lazy shard access for training: the torch Dataset, modality_array, chunked Normaliser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline_steps.fold_data import Normaliser, modality_array
from pipeline_steps.layout import Layout
from pipeline_steps.shard_dataset import ShardDataset
from pipeline_steps.shards import ShardArray, write_shard

IDS = [f"s{i:02d}" for i in range(10)]


@pytest.fixture()
def features(tmp_path: Path) -> tuple[Layout, np.ndarray, np.ndarray]:
    """Video crops in two shards and an EDA shard, ids written in different orders."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (10, 2, 4, 4, 3), dtype=np.uint8)
    signal = rng.normal(3.0, 2.0, (10, 2, 16)).astype(np.float32)
    layout = Layout(tmp_path / "results", "biovid")
    for shard, rows in enumerate((slice(0, 10, 2), slice(1, 10, 2))):
        ids = IDS[rows]
        write_shard(
            layout.video_shard(shard), ids, frames[rows], array_column="frames", modality="video"
        )
    order = np.argsort([f"{i % 3}{i}" for i in range(10)])
    write_shard(
        layout.physio_shard("eda"),
        [IDS[i] for i in order],
        signal[order],
        array_column="signal",
        modality="eda",
        metadata={"sample_rate_hz": 64},
    )
    return layout, frames, signal


def test_modality_array_is_lazy_and_ordered(features: tuple[Layout, np.ndarray, np.ndarray]):
    layout, frames, signal = features
    params = {"crop_faces": {"n_shards": 2}}
    ids = ["s07", "s02", "s05"]
    video = modality_array(params, layout, "video", ids)
    eda = modality_array(params, layout, "eda", ids)
    assert isinstance(video, ShardArray) and video.shape == (3, 2, 4, 4, 3)
    np.testing.assert_array_equal(video[np.array([2, 0])], frames[[5, 7]])
    np.testing.assert_array_equal(eda[0:3], signal[[7, 2, 5]])
    assert eda.shape[1] == 2 and len(eda) == 3


def test_dataset_joins_modalities_and_batches(features: tuple[Layout, np.ndarray, np.ndarray]):
    layout, frames, signal = features
    ids = ["s03", "s08", "s00", "s09"]
    shards = {"video": [layout.video_shard(0), layout.video_shard(1)]}
    shards["eda"] = [layout.physio_shard("eda")]
    ds = ShardDataset(shards, ids, targets=np.array([0, 1, 1, 0]))
    assert len(ds) == 4
    item = ds[1]
    assert item["sample_id"] == "s08" and int(item["target"]) == 1
    assert torch.equal(item["video"], torch.from_numpy(frames[8]))
    assert torch.equal(item["eda"], torch.from_numpy(signal[8]))
    loader = DataLoader(ds, batch_size=3, shuffle=False)
    batch = next(iter(loader))
    assert batch["video"].shape == (3, 2, 4, 4, 3) and batch["video"].dtype == torch.uint8
    assert batch["sample_id"] == ["s03", "s08", "s00"]
    np.testing.assert_array_equal(batch["eda"].numpy(), signal[[3, 8, 0]])
    with pytest.raises(ValueError, match="3 targets for 4 sample ids"):
        ShardDataset(shards, ids, targets=np.zeros(3))


def test_dataset_in_worker_processes(features: tuple[Layout, np.ndarray, np.ndarray]):
    layout, _, signal = features
    ds = ShardDataset({"eda": [layout.physio_shard("eda")]}, IDS)
    loader = DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context="spawn")
    got = torch.cat([b["eda"] for b in loader]).numpy()
    np.testing.assert_array_equal(got, signal)


def test_for_dataset_reads_the_pipeline_layout(features, tmp_path: Path):
    layout, frames, _ = features
    import pandas as pd

    pd.DataFrame({"sample_id": IDS[::-1]}).to_parquet(layout.index)
    params = {
        "run": {"results_dir": str(tmp_path / "results")},
        "datasets": {"biovid": {"modalities": ["video", "eda"]}},
        "crop_faces": {"n_shards": 2},
    }
    ds = ShardDataset.for_dataset(params, "biovid")
    assert ds.sample_ids == IDS[::-1] and set(ds.arrays) == {"video", "eda"}
    assert torch.equal(ds[0]["video"], torch.from_numpy(frames[9]))


@pytest.mark.parametrize("shape", [(37, 3, 50), (37, 5)])
def test_normaliser_in_chunks_equals_numpy(tmp_path: Path, shape: tuple[int, ...]):
    x = np.random.default_rng(2).normal(5.0, 3.0, shape).astype(np.float32)
    axes = (0, 2) if x.ndim == 3 else (0,)
    want_mean = x.mean(axis=axes, keepdims=True)[0]
    want_std = x.std(axis=axes, keepdims=True)[0]
    path = tmp_path / "x.parquet"
    write_shard(path, [str(i) for i in range(len(x))], x, array_column="signal", modality="eda")
    for source, chunk in ((x, 64 << 20), (ShardArray([path]), 4 * 3 * 50 * 8)):
        norm = Normaliser.fit(source, chunk_bytes=chunk)  # 4-row chunks for the lazy array
        assert norm.mean.shape == want_mean.shape and norm.mean.dtype == np.float32
        np.testing.assert_allclose(norm.mean, want_mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(norm.std, want_std, rtol=1e-5)
    with pytest.raises(ValueError, match="no training samples"):
        Normaliser.fit(np.zeros((0, 3, 4), np.float32))


@pytest.mark.parametrize("threads", ["1", "3"])
def test_frame_batches_follow_the_trainers_order(
    features: tuple[Layout, np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch, threads: str
):
    """The fine-tuning student's clips: the given batches in order, from 0 or 2 workers."""
    from pipeline_steps.frame_batches import FrameBatches, loader_workers

    layout, frames, _ = features
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    assert loader_workers() == int(threads) - 1
    ids = ["s07", "s02", "s05", "s00", "s09"]
    clips = FrameBatches([layout.video_shard(0), layout.video_shard(1)], ids, torch.device("cpu"))
    batches = [torch.tensor([3, 0]), torch.tensor([4, 1, 2])]
    rows = [int(s[1:]) for s in ids]
    for (idx, got), want in zip(clips(batches), batches, strict=True):
        assert torch.equal(idx, want)
        np.testing.assert_array_equal(got.numpy(), frames[[rows[i] for i in want]])
    ordered = torch.cat(list(clips.in_order(2))).numpy()
    np.testing.assert_array_equal(ordered, frames[rows])
