"""Real on-disk layouts: where the samples file is, what the index depends on, bad annotation
lines, one-line data errors, each two-person window cropped from its own half, the face rule,
and the report's data section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from pipeline_steps import crop_faces, report_data
from pipeline_steps.affwild2 import read_annotation, read_windows
from pipeline_steps.biovid import read_samples, samples_path
from pipeline_steps.config import REPO_ROOT, load_params
from pipeline_steps.dataset_error import DatasetError
from pipeline_steps.dataset_inputs import dvc_paths, snakemake_inputs
from pipeline_steps.face_detector import FaceDetector, crop_clip, detect_clip
from pipeline_steps.layout import Layout, layout_for
from pipeline_steps.qc import QcLog, read_report
from tests.test_crop_faces import _lfw_frames, _no_face_frames, write_video
from tests.test_data_qc import biovid_tree, params_for, write_ann


def test_samples_file_in_the_root_in_starting_point_or_named(tmp_path: Path) -> None:
    root = tmp_path / "biovid"
    root.mkdir()
    with pytest.raises(DatasetError) as err:
        samples_path(root)
    assert str(root / "samples.csv") in str(err.value)
    assert str(root / "starting_point" / "samples.csv") in str(err.value)
    (root / "starting_point").mkdir()
    (root / "starting_point" / "samples.csv").write_text("x")
    assert samples_path(root) == root / "starting_point" / "samples.csv"
    (root / "samples.csv").write_text("x")
    assert samples_path(root) == root / "samples.csv"  # the root first
    (root / "lists").mkdir()
    (root / "lists" / "all.csv").write_text("x")
    assert samples_path(root, "lists/all.csv") == root / "lists" / "all.csv"
    with pytest.raises(DatasetError, match=r"lists/none\.csv: samples file not found"):
        samples_path(root, "lists/none.csv")


def test_biovid_inputs_list_the_files_that_matter(tmp_path: Path) -> None:
    biovid_tree(tmp_path / "data", {}, 2)
    root = tmp_path / "data"
    (root / "starting_point").mkdir()
    (root / "samples.csv").rename(root / "starting_point" / "samples.csv")
    ds = {"layout": "biovid", "root": str(root), "biosignals": "filtered", "classes": ["BL1"]}
    assert dvc_paths(ds) == [
        str(root / "starting_point" / "samples.csv"),
        str(root / "video"),
        str(root / "biosignals_filtered"),
    ]
    files = snakemake_inputs(ds)
    assert str(root / "video" / "s1" / "s1-PA4-001.mp4") in files
    assert str(root / "video" / "s1") in files  # a new file in it changes the folder's time
    assert str(root / "biosignals_filtered" / "s0" / "s0-BL1-001_bio.csv") in files
    samples = read_samples(root, ["BL1", "PA4"], qc=QcLog("x", "skip"))
    assert len(samples) == 4
    ds["biosignals"] = "raw"  # biosignals_raw/ does not exist: left out, not an error
    assert dvc_paths(ds) == [str(root / "starting_point" / "samples.csv"), str(root / "video")]


def test_affwild2_inputs_annotations_videos_and_cropped_aligned_when_used(tmp_path: Path) -> None:
    root = tmp_path / "aw"
    ann = root / "annotations" / "VA_Estimation_Challenge"
    write_ann(ann / "Train_Set" / "a.txt", [(0.1, 0.2)] * 4)
    write_ann(ann / "Validation_Set" / "b_left.txt", [(0.1, 0.2)] * 4)
    write_video(root / "videos" / "batch1" / "b.avi", _no_face_frames(4))
    (root / "cropped_aligned" / "a").mkdir(parents=True)
    (root / "cropped_aligned" / "a" / "00001.jpg").write_bytes(b"")
    ds = {"layout": "affwild2", "root": str(root)}
    assert dvc_paths(ds) == [
        str(ann / "Train_Set"),
        str(ann / "Validation_Set"),
        str(root / "videos"),
        str(root / "cropped_aligned"),
    ]
    files = snakemake_inputs(ds)
    assert str(ann / "Train_Set" / "a.txt") in files
    assert str(root / "videos" / "batch1" / "b.avi") in files
    assert str(root / "cropped_aligned" / "a") in files  # the per-video folder, not its jpgs
    assert not [f for f in files if f.endswith(".jpg")]
    write_video(root / "videos" / "a.mp4", _no_face_frames(4))  # now no video needs the jpgs
    assert str(root / "cropped_aligned") not in dvc_paths(ds)


def test_bad_annotation_lines_unlabel_their_frame_or_stop(tmp_path: Path) -> None:
    path = tmp_path / "v.txt"
    path.write_text("valence,arousal\n0.1,0.2\n0.3\n0.5,abc\n2.0,0.1\n-0.2,0.4\n\n")
    with pytest.raises(DatasetError, match=r"v\.txt: line 3: not 'valence,arousal' \(1 fields\)"):
        read_annotation(path)
    qc = QcLog("index_dataset", "skip")
    labels = read_annotation(path, qc)
    np.testing.assert_allclose(labels, [[0.1, 0.2], [-5, -5], [-5, -5], [-5, -5], [-0.2, 0.4]])
    assert [w["reason"].split(":")[0] for w in qc.warnings] == ["line 3", "line 4", "line 5"]
    assert all(w["file"] == str(path) and w["sample_id"] == "v" for w in qc.warnings)
    assert "frame left unlabelled" in qc.warnings[0]["reason"]
    assert not qc.skipped


def test_a_bad_line_keeps_the_rest_of_the_video(tmp_path: Path) -> None:
    from tests.test_data_qc import _affwild2_root

    root = _affwild2_root(tmp_path, {"a": (12, 12), "b": (12, 12), "c": (12, 12)})
    path = root / "annotations/VA_Estimation_Challenge/Train_Set/b.txt"
    lines = path.read_text().splitlines()
    lines[5] = "0.1;0.2"
    path.write_text("\n".join(lines) + "\n")
    qc = QcLog("index_dataset", "skip")
    windows = read_windows(root, {"window_frames": 4}, qc)
    b = windows[windows["video"] == "b"].set_index("start_frame")
    assert sorted(b.index) == [0, 4, 8]  # the whole video is kept
    assert b.loc[4, "valence"][0] == -5.0 and b.loc[4, "valence"][1] == pytest.approx(0.1)
    (warning,) = qc.warnings
    assert warning["reason"].startswith("line 6: not 'valence,arousal'")


def test_a_data_error_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    biovid_tree(tmp_path / "data", {"s1-PA4-001": "missing_video"}, 4)
    samples = tmp_path / "data" / "samples.csv"
    samples.write_text("".join(samples.read_text().splitlines(True)[:-1]))  # no PA7 row
    _, path = params_for(tmp_path, "error")
    cmd = [sys.executable, "-m", "pipeline_steps.index_dataset", "--params", str(path)]
    done = subprocess.run(
        [*cmd, "--dataset", "biovid"], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("index_dataset: error: ") and "s1-PA4-001.mp4" in line
    assert "index_dataset.on_bad_sample: skip" in line  # the key that skips instead
    (tmp_path / "data" / "samples.csv").unlink()
    done = subprocess.run(
        [*cmd, "--dataset", "biovid"], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT
    )
    (line,) = done.stderr.strip().splitlines()
    assert done.returncode == 1 and "starting_point/samples.csv" in line
    assert "on_bad_sample" not in line  # skipping would not help


def test_two_person_windows_are_cropped_from_their_own_half(tmp_path: Path) -> None:
    """Windows of ``_left`` and ``_right`` of one video, some starting on the same frame."""
    n, t = 20, 8
    left, right = _lfw_frames(n, 0), _lfw_frames(n, 5)
    write_video(tmp_path / "pair.mp4", np.concatenate([left, right], axis=2))
    starts = {"left": [0, 8, 12], "right": [0, 4, 12]}
    rows = pd.DataFrame(
        [
            {
                "sample_id": f"pair_{side}@{s:06d}",
                "video": f"pair_{side}",
                "start_frame": s,
                "n_frames": t,
                "media": "pair.mp4",
                "media_kind": "video",
                "region": side,
            }
            for side, side_starts in starts.items()
            for s in side_starts
        ]
    )
    params = load_params(REPO_ROOT / "params.yaml")
    settings = crop_faces.CropSettings.from_params({**params["crop_faces"], "size": 48})
    cap = cv2.VideoCapture(str(tmp_path / "pair.mp4"))
    decoded = np.stack([cv2.cvtColor(cap.read()[1], cv2.COLOR_BGR2RGB) for _ in range(n)])
    cap.release()
    half = decoded.shape[2] // 2
    halves = {"left": decoded[:, :, :half], "right": decoded[:, :, half:]}
    with FaceDetector(settings.model_path, settings.min_score) as det:
        result = crop_faces.crop_windows(rows, tmp_path, det, settings)
        crops = dict(zip(result.sample_ids, result.frames, strict=True))
        assert sorted(crops) == sorted(rows["sample_id"])
        for row in rows.itertuples():
            clip = halves[row.region][row.start_frame : row.start_frame + t]
            boxes = detect_clip(det, clip, settings.detect_every)
            own = crop_clip(
                clip, boxes, detect_every=settings.detect_every, size=48, margin=settings.margin
            )
            np.testing.assert_array_equal(crops[row.sample_id], own.crops, row.sample_id)
    same_start = crops["pair_left@000000"], crops["pair_right@000000"]
    assert np.abs(same_start[0].astype(int) - same_start[1]).mean() > 10  # two faces


def _faceless_project(tmp_path: Path, min_face_ratio: float) -> tuple[dict, Layout]:
    root = tmp_path / "data"
    write_video(root / "video" / "face.mp4", _lfw_frames(138, 0))
    write_video(root / "video" / "none.mp4", _no_face_frames(138))
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["run"]["results_dir"] = str(tmp_path / "results")
    raw["datasets"]["biovid"]["root"] = str(root)
    raw["crop_faces"].update(n_shards=1, n_frames=4, size=32, min_face_ratio=min_face_ratio)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    params = load_params(path)
    layout = layout_for(params, "biovid")
    layout.index.parent.mkdir(parents=True)
    index = pd.DataFrame(
        {"sample_id": ["face", "none"], "video": ["video/face.mp4", "video/none.mp4"]}
    )
    index.to_parquet(layout.index)
    crop_faces.run(params, "biovid", 0)
    return params, layout


def test_a_clip_without_a_face_is_skipped_by_default_and_kept_with_0(tmp_path: Path) -> None:
    from pipeline_steps.fold_data import load_index

    _, layout = _faceless_project(tmp_path / "default", 0.25)
    report = read_report(layout)
    (skip,) = report["skipped"]
    assert skip["sample_id"] == "none" and skip["file"].endswith("video/none.mp4")
    assert skip["reason"].startswith("face found in 0% of sampled frames, below crop_faces")
    assert list(load_index(layout)["sample_id"]) == ["face"]  # left out of every fold
    _, layout = _faceless_project(tmp_path / "zero", 0.0)
    report = read_report(layout)
    assert report["n_skipped"] == 0 and report["warnings"][0]["sample_id"] == "none"
    assert list(load_index(layout)["sample_id"]) == ["face", "none"]


def test_report_data_section(tmp_path: Path) -> None:
    layout = Layout(str(tmp_path / "results"), "biovid")
    qc = QcLog("index_dataset", "skip")
    qc.bad("s9-PA4-001", DatasetError("/d/video/s9/s9-PA4-001.mp4: video file not found"))
    qc.write(layout)
    qc = QcLog("crop_faces-0", "skip")
    qc.skip("s1-BL1-001", "/d/video/s1/s1-BL1-001.mp4", "face found in 0% of sampled frames")
    qc.warn("s2-PA4-001", "/d/x.mp4", "no face found: centre crop used")
    qc.write(layout)
    index = pd.DataFrame(
        {
            "sample_id": ["s1-BL1-001", "s2-BL1-001", "s1-PA4-001", "s2-PA4-001"],
            "class_name": ["BL1", "BL1", "PA4", "PA4"],
        }
    )
    section = report_data.build(layout, index)
    assert section.kept.to_dict("records") == [
        {"class_name": "BL1", "indexed": 2, "kept": 1},
        {"class_name": "PA4", "indexed": 2, "kept": 2},
    ]
    assert section.skipped["samples"].tolist() == [1, 1]
    markdown = report_data.to_markdown(section)
    assert "## Data and quality control" in markdown
    assert "3 of 4 indexed samples kept; 2 samples skipped" in markdown
    assert str(layout.qc_report) in markdown and "video file not found" in markdown
    page = report_data.to_html(section)
    assert "<h2>Data and quality control</h2>" in page and "face found in #%" in page
    assert json.loads(layout.qc_report.read_text())["n_warnings"] == 1


def test_dvc_yaml_depends_on_a_user_datasets_inputs(tmp_path: Path) -> None:
    from pipeline_steps import job_matrix
    from pipeline_steps.config import validate_params
    from tests.test_workflow import dvc_copy

    root = tmp_path / "biovid"
    biovid_tree(root, {}, 2)
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["datasets"]["biovid"].update(demo=False, root=str(root))
    params = validate_params(raw)
    (tmp_path / "repo").mkdir()
    repo = dvc_copy(tmp_path / "repo")
    (repo / "params.yaml").write_text(yaml.safe_dump(raw))
    job_matrix.write(params, repo)
    assert job_matrix.stale_files(params, repo) == []
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc:
        stages = {s.name: s for s in dvc.index.stages}
    for name in ("index_dataset@biovid", "index_dataset@affwild2"):  # one list for all jobs
        deps = {d.def_path for d in stages[name].deps}
        assert {str(root / p) for p in ("samples.csv", "video", "biosignals_filtered")} <= deps
    assert "make_demo_data@biovid" not in stages
    params["datasets"]["biovid"]["root"] = str(tmp_path / "gone")
    with pytest.raises(job_matrix.JobMatrixError, match="no samples file"):
        job_matrix.write(params, repo)


class _MeanModel(torch.nn.Module):
    """Stands in for a student: (B, T, S, S, 3) uint8 -> (B, 2) outputs, and no embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        mean = x.float().mean(dim=(1, 2, 3, 4))[:, None] / 255
        return torch.cat([mean, 1 - mean], dim=1) * self.scale, None


def test_predict_applies_the_face_rule_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from pipeline_steps import predict

    face = write_video(tmp_path / "face.mp4", _lfw_frames(138, 0))
    none = write_video(tmp_path / "none.mp4", _no_face_frames(138))
    params = load_params(REPO_ROOT / "params.yaml")
    params["crop_faces"].update(size=32, n_frames=4)
    table = predict.predict_videos([face, none], _MeanModel(), ["BL1", "PA4"], params)
    assert table["pred"].tolist()[0] in ("BL1", "PA4") and table["pred"].tolist()[1] == ""
    assert np.isnan(table.loc[1, "p_BL1"]) and table.loc[1, "face_found_ratio"] == 0.0
    assert "none.mp4: video not predicted: no face found" in capsys.readouterr().err
    with pytest.raises(predict.PredictError, match="no video left to predict"):
        predict.predict_videos([none], _MeanModel(), ["BL1", "PA4"], params)
    both = np.concatenate([_no_face_frames(16), _lfw_frames(24, 0)])
    mixed = write_video(tmp_path / "mixed.mp4", both)
    frames = predict.predict_frames([mixed], _MeanModel(), 8, params)
    assert len(frames) == 40 and frames["valence"].isna().tolist() == [True] * 16 + [False] * 24
    assert "mixed.mp4: frames 1-8 not predicted" in capsys.readouterr().err
