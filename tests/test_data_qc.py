"""Bad input (error or skip + qc_report.json), BioVid options, LOSO/stratified folds, Aff-Wild2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_steps import index_dataset
from pipeline_steps.affwild2 import assign_split, read_annotation, read_windows, window_starts
from pipeline_steps.biovid import DatasetError, read_samples
from pipeline_steps.config import REPO_ROOT, load_params
from pipeline_steps.extract_physio import process_channels
from pipeline_steps.folds import assign_folds
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import QcLog, usable_ids
from tests.test_biovid_physio import write_bio, write_samples
from tests.test_crop_faces import _lfw_frames, _no_face_frames, write_video


def biovid_tree(root: Path, bad: dict[str, str], n_subjects: int = 4) -> None:
    """``n_subjects`` x BL1/PA4; ``bad`` maps a sample name to a defect."""
    rows = []
    for i, subject in enumerate(f"s{k}" for k in range(n_subjects)):
        for cls, cid in (("BL1", 0), ("PA4", 4)):
            name = f"{subject}-{cls}-001"
            rows.append((i, subject, cid, cls, len(rows), name))
            video = root / "video" / subject / f"{name}.mp4"
            bio = root / "biosignals_filtered" / subject / f"{name}_bio.csv"
            defect = bad.get(name, "")
            if defect != "missing_video":
                frames = _no_face_frames(138) if defect == "no_face" else _lfw_frames(138, i)
                write_video(video, frames[:40] if defect == "short_video" else frames)
            if defect == "corrupt_video":
                video.write_bytes(video.read_bytes()[:2000])
            if defect != "missing_bio":
                write_bio(
                    bio,
                    n_rows=1000 if defect == "short_bio" else 2816,
                    rate=1000.0 if defect == "rate" else 512.0,
                    flat=defect == "flat",
                )
            if defect == "truncated_csv":
                bio.write_text(bio.read_text()[:5000] + "\n3.0\t\n")
            if defect == "nan":
                lines = bio.read_text().splitlines()
                lines[50] = "\t".join(lines[50].split("\t")[:1] + ["nan"] * 5)
                bio.write_text("\n".join(lines) + "\n")
    rows.append((9, "s9", 7, "PA7", 99, "s9-PA7-001"))  # line 2 * n_subjects + 2  # unknown class
    write_samples(root, rows)


def params_for(tmp: Path, policy: str) -> tuple[dict, Path]:
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["run"]["results_dir"] = str(tmp / "results")
    raw["datasets"]["biovid"]["root"] = str(tmp / "data")
    raw["index_dataset"].update(n_folds=2, n_val_subjects=1, on_bad_sample=policy)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_params(path), path


DEFECTS = {
    "s0-BL1-001": "corrupt_video",
    "s0-PA4-001": "missing_bio",
    "s1-BL1-001": "short_video",
    "s1-PA4-001": "truncated_csv",
    "s2-BL1-001": "nan",
    "s2-PA4-001": "flat",
    "s3-BL1-001": "rate",
    "s3-PA4-001": "missing_video",
}


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    biovid_tree(tmp / "data", DEFECTS)
    return tmp


EXPECTED = {
    "s0-BL1-001": "OpenCV cannot open",
    "s0-PA4-001": "biosignal file not found",
    "s1-BL1-001": "truncated",
    "s1-PA4-001": "(truncated|non-numeric|rows)",
    "s2-BL1-001": "non-numeric or empty",
    "s2-PA4-001": "flat line",
    "s3-BL1-001": "sample rate",
    "s3-PA4-001": "video file not found",
    "s9-PA7-001": "unknown class_name",
}


def test_skip_mode_records_every_bad_sample(bad_tree: Path) -> None:
    params, path = params_for(bad_tree, "skip")
    ds = params["datasets"]["biovid"]
    qc = QcLog("index_dataset", "skip")
    with pytest.raises(DatasetError, match="no usable sample left"):
        index_dataset.build_index(ds, params, qc)  # every sample is bad: empty dataset
    reasons = {e["sample_id"]: e for e in qc.skipped}
    assert set(reasons) == set(EXPECTED)
    for sample_id, pattern in EXPECTED.items():
        import re

        assert re.search(pattern, reasons[sample_id]["reason"]), (sample_id, reasons[sample_id])
        assert reasons[sample_id]["file"]
    qc.write(layout_for(params, "biovid"))
    report = json.loads(layout_for(params, "biovid").qc_report.read_text())
    assert report["n_skipped"] == len(EXPECTED) and report["policy"] == ["skip"]


@pytest.mark.parametrize("sample", sorted(DEFECTS))
def test_error_mode_names_file_and_problem(bad_tree: Path, sample: str) -> None:
    params, _ = params_for(bad_tree, "error")
    ds = params["datasets"]["biovid"]
    rows = read_samples(Path(ds["root"]), ["BL1", "PA4"], qc=QcLog("x", "skip"))
    row = rows[rows["sample_id"] == sample].iloc[0]
    import re

    with pytest.raises(DatasetError) as err:
        index_dataset.check_video(Path(ds["root"]) / row.video, [2.0, 5.0])
        index_dataset.check_biosignals(
            Path(ds["root"]) / row.biosignals, ["gsr", "ecg", "emg_trapezius"], [0.5, 5.5]
        )
    assert re.search(EXPECTED[sample], str(err.value)) and sample in str(err.value)


def test_unknown_class_is_an_error_by_default(bad_tree: Path) -> None:
    with pytest.raises(DatasetError, match="line 10: unknown class_name 'PA7'"):
        read_samples(bad_tree / "data", ["BL1", "PA4"])


def test_good_samples_are_indexed_and_no_face_is_kept(tmp_path: Path) -> None:
    biovid_tree(tmp_path / "data", {"s0-BL1-001": "no_face", "s1-PA4-001": "flat"}, 6)
    params, path = params_for(tmp_path, "skip")
    index_dataset.main(["--params", str(path), "--dataset", "biovid"])
    layout = layout_for(params, "biovid")
    index = pd.read_parquet(layout.index)
    assert "s0-BL1-001" in set(index["sample_id"])  # no face is not a bad sample
    assert "s1-PA4-001" not in set(index["sample_id"])
    report = json.loads(layout.qc_report.read_text())
    assert {e["sample_id"] for e in report["skipped"]} == {"s1-PA4-001", "s9-PA7-001"}


def test_raw_biosignals_and_all_five_classes(tmp_path: Path) -> None:
    rows = [(0, "s0", c, n, c, f"s0-{n}-001") for c, n in enumerate(("BL1", "PA1", "PA2"))]
    write_samples(tmp_path, rows)
    table = read_samples(tmp_path, ["BL1", "PA1", "PA2", "PA3", "PA4"], biosignals="raw")
    assert table["label"].tolist() == [0, 1, 2]
    assert table["biosignals"].iloc[0].startswith("biosignals_raw/s0/")


def test_loso_and_stratified_folds() -> None:
    rows = [
        {"sample_id": f"s{s}-{i}", "subject": f"s{s}", "label": int(i < (1 if s < 4 else 3))}
        for s in range(8)
        for i in range(4)
    ]
    index = pd.DataFrame(rows)
    loso = assign_folds(index, 2, 1, seed=0, loso=True)
    assert loso["test_fold"].nunique() == 8 and "split_7" in loso.columns
    strat = assign_folds(index, 2, 1, seed=0)
    share = strat.groupby("test_fold")["label"].mean()
    assert abs(share[0] - share[1]) < 0.2  # subjects with many positives spread over folds


def test_usable_ids_is_the_intersection(capsys: pytest.CaptureFixture) -> None:
    assert usable_ids(["a", "b", "c"], {"video": ["a", "c"], "eda": ["c", "a", "b"]}) == ["a", "c"]
    assert "missing from the video shard" in capsys.readouterr().out


def test_derived_physio_channels(tmp_path: Path) -> None:
    path = tmp_path / "a_bio.csv"
    write_bio(path)
    eda = process_channels(path, "gsr", ["tonic", "phasic"], [2.0, 5.0], 64)
    assert eda.shape == (3, 192) and np.isfinite(eda).all()
    ecg = process_channels(path, "ecg", ["heart_rate"], [0.5, 5.5], 64)
    assert ecg.shape == (2, 320) and 40 < float(np.median(ecg[1])) < 120


# --- Aff-Wild2 ----------------------------------------------------------------------------


def write_ann(path: Path, values: list[tuple[float, float]], header: str = "valence,arousal"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header] + [f"{v},{a}" for v, a in values]) + "\n")


def test_annotation_format_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "v.txt"
    write_ann(good, [(0.1, 0.2), (-5, -5)])
    np.testing.assert_allclose(read_annotation(good), [[0.1, 0.2], [-5, -5]])
    write_ann(tmp_path / "h.txt", [(0.1, 0.2)], header="v,a")
    with pytest.raises(DatasetError, match="header"):
        read_annotation(tmp_path / "h.txt")
    write_ann(tmp_path / "r.txt", [(0.1, 0.2), (3.0, 0.0)])
    with pytest.raises(DatasetError, match="line 3: value outside"):
        read_annotation(tmp_path / "r.txt")
    assert window_starts(10, 4, 4) == [0, 4, 6] and window_starts(3, 4, 4) == []


def test_affwild2_windows_frames_layout_and_mismatch(tmp_path: Path) -> None:
    import cv2

    root = tmp_path / "aw"
    ann = root / "annotations" / "VA_Estimation_Challenge"
    rng = np.random.default_rng(0)
    for set_name, videos in (
        ("Train_Set", ["a", "b", "c_left", "c_right"]),
        ("Validation_Set", ["d"]),
    ):
        for video in videos:
            labels = rng.uniform(-1, 1, (21, 2)).round(3).tolist()  # one more line than frames
            labels[:8] = [(-5, -5)] * 8
            write_ann(ann / set_name / f"{video}.txt", labels)
            folder = root / "cropped_aligned" / video
            folder.mkdir(parents=True)
            for i in range(20):
                if i != 10:  # a missing crop
                    cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), np.full((8, 8, 3), i, np.uint8))
    windows = read_windows(root, {"window_frames": 8, "window_stride": 0})
    # 20 usable frames: starts 0, 8, 12; the first window is all -5 and dropped
    assert sorted(windows.loc[windows["video"] == "a", "start_frame"]) == [8, 12]
    assert set(windows["media_kind"]) == {"frames"}
    assert set(windows.loc[windows["video"] == "c_left", "subject"]) == {"c"}
    split = assign_split(windows, 0.3, seed=0)
    assert set(split.loc[split["set"] == "Validation_Set", "split_0"]) == {"test"}
    val = set(split.loc[split["split_0"] == "val", "subject"])
    assert len(val) == 1 and not val & set(split.loc[split["split_0"] == "train", "subject"])


def test_video_with_fewer_decodable_frames_than_its_container_claims(tmp_path: Path) -> None:
    """The container reports every frame but the file was cut: index_dataset seeks to the last
    needed frame and names the file."""
    from tests.test_crop_faces import truncated_video

    video, n = truncated_video(tmp_path / "cut.mp4", _lfw_frames(138, 0), 0.5)
    assert n < 125
    with pytest.raises(DatasetError, match=r"cut\.mp4: frame 124 cannot be decoded \(truncated"):
        index_dataset.check_video(video, [2.0, 5.0])


def test_names_outside_the_root_are_skipped_and_recorded(tmp_path: Path) -> None:
    biovid_tree(tmp_path / "data", {}, 6)
    samples = (tmp_path / "data" / "samples.csv").read_text().splitlines()
    samples.append("\t".join(["9", "..", "0", "BL1", "98", "x-BL1-001"]))
    samples.append("\t".join(["9", "s1", "0", "BL1", "97", "../../etc/passwd"]))
    (tmp_path / "data" / "samples.csv").write_text("\n".join(samples) + "\n")
    params, path = params_for(tmp_path, "skip")
    index_dataset.main(["--params", str(path), "--dataset", "biovid"])
    layout = layout_for(params, "biovid")
    index = pd.read_parquet(layout.index)
    assert len(index) == 12 and not index["video"].str.contains(r"\.\.").any()
    report = json.loads(layout.qc_report.read_text())
    outside = [e for e in report["skipped"] if "outside the dataset root" in e["reason"]]
    assert {e["sample_id"] for e in outside} == {"x-BL1-001", "../../etc/passwd"}
    assert all(e["file"].endswith("samples.csv") for e in outside)


def _affwild2_root(tmp_path: Path, videos: dict[str, tuple[int, int]]) -> Path:
    """Frames-layout Aff-Wild2: ``video -> (label lines, jpg frames)``; 0 frames = no media."""
    import cv2

    root = tmp_path / "aw"
    ann = root / "annotations" / "VA_Estimation_Challenge"
    for k, (video, (n_labels, n_frames)) in enumerate(videos.items()):
        set_name = "Validation_Set" if k == 0 else "Train_Set"
        write_ann(ann / set_name / f"{video}.txt", [(0.1, 0.2)] * n_labels)
        for i in range(n_frames):
            folder = root / "cropped_aligned" / video
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{i + 1:05d}.jpg"), np.full((8, 8, 3), i, np.uint8))
    return root


def test_affwild2_label_and_frame_counts_that_disagree(tmp_path: Path) -> None:
    """Off by one: silently the shorter length; beyond the tolerance: also a QC warning."""
    root = _affwild2_root(tmp_path, {"a": (17, 16), "b": (16, 16), "c": (12, 16)})
    qc = QcLog("index_dataset", "skip")
    windows = read_windows(root, {"window_frames": 4}, qc)
    last = windows.groupby("video")["start_frame"].max().to_dict()
    assert last == {"a": 12, "b": 12, "c": 8}  # usable length min(labels, frames)
    assert not qc.skipped
    (warning,) = qc.warnings
    assert warning["sample_id"] == "c" and warning["file"].endswith("cropped_aligned/c")
    assert warning["reason"] == "12 labelled frames, 16 in the media"


def test_affwild2_missing_media_and_bad_names(tmp_path: Path) -> None:
    root = _affwild2_root(tmp_path / "m", {"a": (8, 8), "b": (8, 8), "nomedia": (8, 0)})
    with pytest.raises(DatasetError, match=r"aw: no video videos/\*\*/nomedia\.mp4\|\.avi"):
        read_windows(root, {"window_frames": 4})
    root = _affwild2_root(tmp_path / "n", {"a": (8, 8), ".x": (8, 8)})
    with pytest.raises(DatasetError, match=r"Train_Set/\.x\.txt: video name '\.x' would resolve"):
        read_windows(root, {"window_frames": 4})
    videos = {"a": (8, 8), "b": (8, 8), "nomedia": (8, 0), ".x": (8, 8)}
    qc = QcLog("index_dataset", "skip")
    windows = read_windows(_affwild2_root(tmp_path / "s", videos), {"window_frames": 4}, qc)
    assert set(windows["video"]) == {"a", "b"}
    reasons = {e["sample_id"]: e["reason"] for e in qc.skipped}
    assert set(reasons) == {"nomedia", ".x"}
    assert "would resolve outside the dataset root" in reasons[".x"]
    empty = _affwild2_root(tmp_path / "e", {"a": (3, 3), "b": (3, 3)})
    with pytest.raises(DatasetError, match="no window of 4 frames"):
        read_windows(empty, {"window_frames": 4})  # empty dataset after filtering
