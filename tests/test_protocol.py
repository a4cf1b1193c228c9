"""Protocol guarantees on the tiny demo run: the test split never reaches training or model
selection, and the video-only predict CLI works on new videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_steps import (
    align_teacher_pool,
    predict,
    train_fusion_teacher,
    train_modality_teacher,
    train_student,
)
from pipeline_steps.folds import split_ids
from pipeline_steps.shards import read_shard, write_shard

pytestmark = pytest.mark.slow
FOLD = 0


@pytest.fixture()
def project(demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the demo run, as the working directory."""
    work = tmp_path / "copy"
    shutil.copytree(demo_run, work, ignore=shutil.ignore_patterns("mlruns", "mlartifacts"))
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as the Snakemake jobs ran (threads: 1)
    return work


def params_file(work: Path) -> str:
    return str(work / ".snakemake/mtpkdot/params.yaml")


def fold_args(work: Path, *extra: str) -> list[str]:
    return ["--params", params_file(work), "--dataset", "biovid", "--fold", str(FOLD), *extra]


def state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def poison_test_split(work: Path) -> list[str]:
    """Corrupt every input of the fold's test samples: labels flipped, features garbage."""
    results = work / "results/biovid"
    index = pd.read_parquet(results / "index.parquet")
    test = split_ids(index, FOLD, "test")
    is_test = index["sample_id"].isin(test)
    index.loc[is_test, "label"] = 1 - index.loc[is_test, "label"]
    index.to_parquet(results / "index.parquet", index=False)
    shard_path = results / "features/eda.parquet"
    shard = read_shard(shard_path)
    rows = np.isin(shard.sample_ids, test)
    shard.array[rows] = 1e6
    write_shard(
        shard_path,
        shard.sample_ids,
        shard.array,
        array_column="signal",
        modality="eda",
        metadata={
            k: v
            for k, v in shard.metadata.items()
            if k not in ("schema_version", "modality", "array_column", "shape", "dtype")
        },
    )
    for emb_path in (results / f"fold{FOLD}/embeddings").glob("*.pt"):
        stored = torch.load(emb_path, weights_only=True)
        rows = torch.as_tensor([s in set(test) for s in stored["sample_ids"]])
        stored["embeddings"][rows] = float("nan")
        torch.save(stored, emb_path)
    return test


def test_test_split_never_reaches_training_or_selection(project: Path):
    fold_dir = project / f"results/biovid/fold{FOLD}"
    before = {
        "eda": state(fold_dir / "teachers/eda.pt"),
        "fusion": state(fold_dir / "teachers/fusion.pt"),
        "pool": state(fold_dir / "teachers/pool.pt"),
        "mtpkdot": state(fold_dir / "students/seed0/mtpkdot.pt"),
    }
    emb_before = torch.load(fold_dir / "embeddings/eda.pt", weights_only=True)
    test = poison_test_split(project)
    assert test, "the fold has test samples"
    # The eda teacher retrains on poisoned files; the other stages then read the poisoned
    # (NaN) test embeddings of video/ecg/emg plus the freshly exported eda embeddings.
    train_modality_teacher.main(fold_args(project, "--modality", "eda"))
    assert_same_state(before["eda"], state(fold_dir / "teachers/eda.pt"))
    emb_after = torch.load(fold_dir / "embeddings/eda.pt", weights_only=True)
    keep = torch.as_tensor([s not in set(test) for s in emb_after["sample_ids"]])
    torch.testing.assert_close(emb_after["embeddings"][keep], emb_before["embeddings"][keep])
    for path in (fold_dir / "embeddings").glob("*.pt"):  # re-poison eda's test rows
        stored = torch.load(path, weights_only=True)
        rows = torch.as_tensor([s in set(test) for s in stored["sample_ids"]])
        stored["embeddings"][rows] = float("nan")
        torch.save(stored, path)
    train_fusion_teacher.main(fold_args(project))
    assert_same_state(before["fusion"], state(fold_dir / "teachers/fusion.pt"))
    align_teacher_pool.main(fold_args(project))
    assert_same_state(before["pool"], state(fold_dir / "teachers/pool.pt"))
    train_student.main(fold_args(project, "--method", "mtpkdot"))
    assert_same_state(before["mtpkdot"], state(fold_dir / "students/seed0/mtpkdot.pt"))


def test_predict_cli_on_demo_videos(project: Path):
    videos = sorted((project / "data/biovid_demo/video").rglob("*.mp4"))[:2]
    folder = project / "new_videos"
    folder.mkdir()
    for v in videos:
        shutil.copy(v, folder / v.name)
    out = project / "pred.csv"
    predict.main(
        [
            "--params",
            params_file(project),
            "--dataset",
            "biovid",
            "--fold",
            "0",
            "--method",
            "mtpkdot",
            "--input",
            str(folder),
            "--output",
            str(out),
        ]
    )
    table = pd.read_csv(out)
    assert len(table) == 2 and set(table["pred"]) <= {"BL1", "PA4"}
    np.testing.assert_allclose(table["p_BL1"] + table["p_PA4"], 1.0, rtol=1e-5)
    assert (table["face_found_ratio"] > 0).all()


def test_predict_refuses_unreadable_and_faceless_videos(project: Path, tmp_path: Path):
    import cv2

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(predict.PredictError, match="missing.mp4"):
        predict.list_videos(tmp_path / "missing.mp4")
    blank = tmp_path / "blank.mp4"
    writer = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 25, (128, 128))
    for _ in range(138):
        writer.write(np.full((128, 128, 3), 90, np.uint8))
    writer.release()
    from pipeline_steps.config import load_params

    params = load_params(params_file(project))
    model = torch.nn.Linear(1, 1)
    for path, message in ((bad, "cannot read video"), (blank, "no face found")):
        with pytest.raises(predict.PredictError, match=message):
            predict.predict_videos([path], model, ["BL1", "PA4"], params)
