"""crop_faces: the box tracker/cropper on synthetic boxes, and the step end to end on videos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from skimage import data

from pipeline_steps import crop_faces
from pipeline_steps.config import REPO_ROOT, load_params
from pipeline_steps.crop_faces import VideoError
from pipeline_steps.face_detector import (
    Box,
    FaceDetector,
    crop_clip,
    face_found_ratio,
    fill_track,
    smooth_track,
    square_boxes,
)
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import read_report
from pipeline_steps.shards import read_shard, read_shards

FPS = 25
FRAME = 192


# --- tracker and cropper -------------------------------------------------------------------


def test_fill_track_interpolates_and_holds() -> None:
    a, b = Box(10, 20, 30, 40), Box(30, 40, 50, 60)
    track = fill_track([None, a, None, b, None, None])
    np.testing.assert_allclose(track[0], [10, 20, 30, 40])  # before the first: held back
    np.testing.assert_allclose(track[2], [20, 30, 40, 50])  # between: linear
    np.testing.assert_allclose(track[4:], [[30, 40, 50, 60]] * 2)  # after the last: held
    assert fill_track([None, None]) is None


def test_face_found_ratio_counts_detector_calls_only() -> None:
    box = Box(0, 0, 1, 1)
    assert face_found_ratio([box, None, None, None, box], detect_every=2) == pytest.approx(2 / 3)
    assert face_found_ratio([box, None, box], detect_every=1) == pytest.approx(2 / 3)
    assert face_found_ratio([None] * 4, detect_every=2) == 0.0


def test_smoothing() -> None:
    track = np.array([[0, 0, 10, 10], [6, 0, 10, 10], [0, 0, 10, 10], [6, 0, 10, 10]], float)
    smooth = smooth_track(track, 3)
    assert smooth.shape == track.shape
    assert np.ptp(smooth[:, 0]) < np.ptp(track[:, 0])
    np.testing.assert_allclose(smooth[:, 2:], track[:, 2:])  # constant stays constant
    np.testing.assert_array_equal(smooth_track(track, 1), track)


def test_square_with_margin_and_clipping() -> None:
    squares = square_boxes(
        np.array([[40, 50, 20, 32], [-10, -5, 40, 40], [0, 0, 90, 90], [90, 70, 20, 20]], float),
        image_hw=(80, 100),
        margin=0.25,
    )
    np.testing.assert_array_equal(squares[0], [26, 42 - 10, 48])  # centre (50, 66) -> moved up
    np.testing.assert_array_equal(squares[1], [0, 0, 60])  # shifted inside at the corner
    np.testing.assert_array_equal(squares[2], [5, 0, 80])  # larger than the image: shrunk
    np.testing.assert_array_equal(squares[3], [70, 50, 30])  # bottom-right corner
    h, w = 80, 100
    assert (squares[:, 0] >= 0).all() and (squares[:, 0] + squares[:, 2] <= w).all()
    assert (squares[:, 1] >= 0).all() and (squares[:, 1] + squares[:, 2] <= h).all()


def _pattern_frames(t: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_crop_clip_follows_the_boxes() -> None:
    frames = _pattern_frames(5, 60, 100)
    boxes = [Box(10, 10, 16, 16), None, Box(30, 10, 16, 16), None, None]
    clip = crop_clip(frames, boxes, detect_every=2, size=24, margin=0.25, smooth=1)
    assert clip.crops.shape == (5, 24, 24, 3) and clip.crops.dtype == np.uint8
    assert clip.face_found_ratio == pytest.approx(2 / 3) and not clip.centre_fallback
    # side 16 * 1.5 = 24 = size: frame 1 (interpolated x = 20) is an exact cut
    np.testing.assert_array_equal(clip.crops[0], frames[0, 6:30, 6:30])
    np.testing.assert_array_equal(clip.crops[1], frames[1, 6:30, 16:40])
    np.testing.assert_array_equal(clip.crops[4], frames[4, 6:30, 26:50])


def test_crop_clip_centre_fallback() -> None:
    frames = _pattern_frames(4, 60, 100)
    clip = crop_clip(frames, [None] * 4, detect_every=2, size=60, margin=0.25)
    assert clip.centre_fallback and clip.face_found_ratio == 0.0
    np.testing.assert_array_equal(clip.crops, frames[:, :, 20:80])
    small = crop_clip(frames, [None] * 4, detect_every=2, size=30, margin=0.25)
    assert small.crops.shape == (4, 30, 30, 3)


def test_sample_times_and_indices() -> None:
    times = crop_faces.sample_times((2.0, 5.0), 6)
    np.testing.assert_allclose(times, [2.25, 2.75, 3.25, 3.75, 4.25, 4.75])
    np.testing.assert_array_equal(crop_faces.frame_indices(times, 25.0), [56, 69, 81, 94, 106, 119])


# --- videos --------------------------------------------------------------------------------


def _astronaut_frames(n: int) -> np.ndarray:
    """The astronaut's face (~70 px) drifting and zooming slightly."""
    img = data.astronaut()
    out = []
    for i in range(n):
        dx, dy = int(20 * np.sin(i / 15)), int(10 * np.cos(i / 20))
        crop = img[40 + dy : 300 + dy, 110 + dx : 370 + dx]
        out.append(cv2.resize(crop, (FRAME, FRAME), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def _lfw_frames(n: int, which: int) -> np.ndarray:
    """An LFW face upscaled to 128 px on a grey background, moving sideways."""
    face = (data.lfw_subset()[which] * 255).astype(np.uint8)
    face = cv2.resize(face, (128, 128), interpolation=cv2.INTER_CUBIC)
    face = np.repeat(face[:, :, None], 3, axis=2)
    out = []
    for i in range(n):
        frame = np.full((FRAME, FRAME, 3), 110, np.uint8)
        x = 10 + int(40 * i / n)
        frame[32:160, x : x + 128] = face
        out.append(frame)
    return np.stack(out)


def _no_face_frames(n: int) -> np.ndarray:
    """Moving colour gradients: nothing face-like."""
    yy, xx = np.mgrid[0:FRAME, 0:FRAME]
    out = []
    for i in range(n):
        r = (xx + 3 * i) % 256
        g = (yy * 2 + i) % 256
        b = np.full_like(xx, 60)
        out.append(np.stack([r, g, b], axis=2).astype(np.uint8))
    return np.stack(out)


def write_video(path: Path, frames_rgb: np.ndarray, fps: float = FPS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames_rgb.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames_rgb:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


N_VIDEO_FRAMES = int(5.5 * FPS)

CLIPS = {
    "s1_a": _astronaut_frames,
    "s2_b": lambda n: _lfw_frames(n, 0),
    "s3_c": lambda n: _lfw_frames(n, 5),
    "s4_d": _no_face_frames,
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Params for a small dataset of 4 videos (3 faces, 1 without) and its index."""
    tmp = tmp_path_factory.mktemp("crop")
    root = tmp / "data"
    for sample_id, make in CLIPS.items():
        write_video(root / "video" / f"{sample_id}.mp4", make(N_VIDEO_FRAMES))
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["run"]["results_dir"] = str(tmp / "results")
    raw["datasets"]["biovid"]["root"] = str(root)
    raw["crop_faces"].update(n_shards=2, n_frames=6, size=96, detect_every=2)
    params_path = tmp / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    params = load_params(params_path)
    index = pd.DataFrame(
        {"sample_id": list(CLIPS)[::-1], "video": [f"video/{s}.mp4" for s in list(CLIPS)[::-1]]}
    )
    _write_index(params, index)
    return params, params_path


def _write_index(params: dict, index: pd.DataFrame) -> None:
    path = layout_for(params, "biovid").index
    path.parent.mkdir(parents=True, exist_ok=True)
    index.to_parquet(path)


def test_end_to_end(dataset: tuple[dict, Path], capsys: pytest.CaptureFixture) -> None:
    params, params_path = dataset
    layout = layout_for(params, "biovid")
    for shard in ("0", "1"):
        argv = ["--params", str(params_path), "--dataset", "biovid", "--shard", shard]
        assert crop_faces.main(argv) == 0
    out = capsys.readouterr().out
    assert "shard 0/2: 2 videos" in out and "shard 1/2: 2 videos" in out

    first = read_shard(layout.video_shard(0))
    assert first.sample_ids == ["s1_a", "s3_c"]  # sorted ids, positions 0 and 2
    shard = read_shards([layout.video_shard(0), layout.video_shard(1)], sorted(CLIPS))
    assert shard.array.shape == (4, 6, 96, 96, 3) and shard.array.dtype == np.uint8
    meta = shard.metadata
    assert meta["modality"] == "video" and meta["array_column"] == "frames"
    assert meta["color"] == "RGB" and meta["n_frames"] == 6 and meta["size"] == 96
    assert meta["window_s"] == [2.0, 5.0] and meta["fps"] == pytest.approx(2.0)
    assert meta["source_fps"] == [25.0]

    ratio = dict(zip(shard.sample_ids, shard.extra["face_found_ratio"], strict=True))
    assert shard.extra["face_found_ratio"].dtype == np.float32
    assert all(ratio[s] == 1.0 for s in ("s1_a", "s2_b", "s3_c"))
    assert ratio["s4_d"] == 0.0
    report = read_report(layout)  # the face-less clip is skipped (crop_faces.min_face_ratio)
    assert report["n_warnings"] == 0
    (skipped,) = report["skipped"]
    assert skipped["sample_id"] == "s4_d" and skipped["file"].endswith("video/s4_d.mp4")
    assert skipped["reason"].startswith("face found in 0% of sampled frames")

    # face crops are centred on a face of the expected size (side = face * (1 + 2 margin))
    with FaceDetector("auto") as det:
        for i, sample_id in enumerate(shard.sample_ids[:3]):
            crop = cv2.resize(shard.array[i, 3], (192, 192))
            box = det.detect(crop)
            assert box is not None, sample_id
            centre = np.array([box.x + box.w / 2, box.y + box.h / 2])
            np.testing.assert_allclose(centre, [96, 96], atol=192 * 0.12)
            assert 192 / 1.5 * 0.6 < box.w < 192 / 1.5 * 1.4

    # the face-less clip is the centre square (here the whole frame), resized
    frames, _ = crop_faces.read_frames(
        Path(params["datasets"]["biovid"]["root"]) / "video/s4_d.mp4", (2.0, 5.0), 6
    )
    expected = np.stack([cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA) for f in frames])
    np.testing.assert_array_equal(shard.array[3], expected)


def test_missing_video_names_the_file(dataset: tuple[dict, Path], tmp_path: Path) -> None:
    params, _ = dataset
    params = {**params, "run": {**params["run"], "results_dir": str(tmp_path)}}
    _write_index(params, pd.DataFrame({"sample_id": ["x"], "video": ["video/missing.mp4"]}))
    with pytest.raises(VideoError, match=r"missing\.mp4: video file not found"):
        crop_faces.run(params, "biovid", 0)
    assert not layout_for(params, "biovid").video_shard(0).exists()


def test_short_and_broken_videos(tmp_path: Path) -> None:
    short = write_video(tmp_path / "short.mp4", _no_face_frames(30))  # 1.2 s
    with pytest.raises(VideoError, match=r"short\.mp4: too few frames: decoded 30"):
        crop_faces.read_frames(short, (2.0, 5.0), 6)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match=r"broken\.mp4: OpenCV cannot open"):
        crop_faces.read_frames(broken, (2.0, 5.0), 6)


def test_skip_hook_and_shard_selection(dataset: tuple[dict, Path]) -> None:
    params, _ = dataset
    index = pd.DataFrame({"sample_id": ["b", "a", "c"], "video": ["x/b.mp4", "x/a.mp4", "c.mp4"]})
    assert crop_faces.shard_rows(index.sort_values("sample_id"), 1, 2)["sample_id"].tolist() == [
        "b"
    ]
    with pytest.raises(ValueError, match="--shard 2"):
        crop_faces.shard_rows(index, 2, 2)
    settings = crop_faces.CropSettings.from_params(params["crop_faces"])
    errors: list[VideoError] = []
    result = crop_faces.crop_shard(index, Path("/nonexistent"), None, settings, errors.append)
    assert len(errors) == 3 and result.frames.shape == (0, 6, 96, 96, 3)


def _reencode(src: Path, dst: Path, *codec: str) -> Path | None:
    """``src`` re-encoded by the bundled ffmpeg, or None where that codec is not built in."""
    import subprocess

    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(src), *codec, str(dst)]
    return dst if subprocess.run(cmd, capture_output=True).returncode == 0 else None


def test_seeking_reads_the_same_frames_as_a_sequential_read(tmp_path: Path) -> None:
    """The seek to the window start is frame-exact (mp4v, H.264 with B-frames, VP9)."""
    src = write_video(tmp_path / "a.mp4", _astronaut_frames(N_VIDEO_FRAMES))
    videos = [
        src,
        _reencode(src, tmp_path / "b.mp4", "-c:v", "libx264", "-bf", "3", "-g", "50"),
        _reencode(src, tmp_path / "c.webm", "-c:v", "libvpx-vp9", "-g", "40"),
    ]
    checked = 0
    for video in [v for v in videos if v is not None]:
        for window in ((2.0, 5.0), (0.3, 1.9), (4.0, 5.4)):
            seq, fps = crop_faces.read_frames(video, window, 6, seek=False)
            sought, fps_sought = crop_faces.read_frames(video, window, 6)
            assert fps_sought == fps
            np.testing.assert_array_equal(sought, seq, err_msg=f"{video.name} {window}")
            checked += 1
    assert checked >= 3


def test_window_past_the_end_reports_the_frame_count(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", _no_face_frames(100))  # 4 s: frame 120 missing
    with pytest.raises(VideoError, match=r"too few frames: decoded 100 .* needs frame 120"):
        crop_faces.read_frames(video, (2.0, 5.0), 8)


# --- container frame count above the decodable frames ---------------------------------------


def truncated_video(path: Path, frames_rgb: np.ndarray, keep: float) -> tuple[Path, int]:
    """A faststart mp4 cut to ``keep`` of its bytes: the container still reports every frame,
    decoding ends early. Returns the path and the number of frames that decode."""
    import subprocess

    import imageio_ffmpeg

    full = write_video(path.with_name(f"full-{path.name}"), frames_rgb)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-i", str(full), "-c", "copy"]
    subprocess.run([*cmd, "-movflags", "+faststart", str(path)], check=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    cap = cv2.VideoCapture(str(path))
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == len(frames_rgb)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    assert 0 < n < len(frames_rgb)
    return path, n


def _noise_frames(n: int) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_truncated_video_is_named_or_skipped(dataset: tuple[dict, Path], tmp_path: Path) -> None:
    """BioVid: a video whose container claims more frames than decode is a bad sample."""
    params, _ = dataset
    root = Path(params["datasets"]["biovid"]["root"])
    video, n = truncated_video(root / "video" / "cut.mp4", _noise_frames(N_VIDEO_FRAMES), 0.5)
    assert n < 121  # frame 120 (4.8 s) is needed
    with pytest.raises(VideoError, match=rf"cut\.mp4: too few frames: decoded {n} "):
        crop_faces.read_frames(video, (2.0, 5.0), 8)
    skip = {
        **params,
        "run": {**params["run"], "results_dir": str(tmp_path)},
        "index_dataset": {**params["index_dataset"], "on_bad_sample": "skip"},
        "crop_faces": {**params["crop_faces"], "n_shards": 1},
    }
    rows = {"s1_a": "video/s1_a.mp4", "zz_cut": "video/cut.mp4", "zz_gone": "video/gone.mp4"}
    _write_index(skip, pd.DataFrame({"sample_id": list(rows), "video": list(rows.values())}))
    out = crop_faces.run(skip, "biovid", 0)
    assert read_shard(out).sample_ids == ["s1_a"]
    report = read_report(layout_for(skip, "biovid"))
    found = {e["sample_id"]: e for e in report["skipped"]}
    assert set(found) == {"zz_cut", "zz_gone"} and report["policy"] == ["skip"]
    assert found["zz_cut"]["file"].endswith("video/cut.mp4")
    assert found["zz_cut"]["reason"].startswith(f"too few frames: decoded {n}")
    assert found["zz_gone"]["reason"] == "video file not found"


def test_affwild2_over_reported_frames_within_tolerance(tmp_path: Path) -> None:
    """Aff-Wild2 windows: up to FRAME_TOLERANCE missing end frames repeat the last decoded
    frame; more is an error naming the file."""
    from pipeline_steps.affwild2 import FRAME_TOLERANCE

    frames = _noise_frames(100)
    video, n = truncated_video(tmp_path / "v.mp4", frames, 0.9)
    assert n + FRAME_TOLERANCE < 100
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    settings = crop_faces.CropSettings.from_params({**params["crop_faces"], "size": 32})

    def window(last: int) -> pd.DataFrame:
        t = 6
        return pd.DataFrame(
            {
                "sample_id": [f"v@{last - t + 1:06d}"],
                "video": ["v"],
                "start_frame": [last - t + 1],
                "n_frames": [t],
                "media": ["v.mp4"],
                "media_kind": ["video"],
                "region": ["full"],
            }
        )

    with FaceDetector("auto") as det:
        ok = crop_faces.crop_windows(window(n - 1 + FRAME_TOLERANCE), tmp_path, det, settings)
        assert ok.sample_ids == [f"v@{n - 6 + FRAME_TOLERANCE:06d}"]
        held = ok.frames[0, -FRAME_TOLERANCE - 1 :]
        assert all(np.array_equal(held[0], h) for h in held[1:])  # last decoded frame repeated
        with pytest.raises(VideoError, match=rf"v\.mp4: decoding ended at frame {n}"):
            crop_faces.crop_windows(window(n + FRAME_TOLERANCE), tmp_path, det, settings)
        errors: list[VideoError] = []
        skipped = crop_faces.crop_windows(
            window(n + FRAME_TOLERANCE), tmp_path, det, settings, errors.append
        )
    assert not skipped.sample_ids and [e.sample_id for e in errors] == [f"v@{n - 3:06d}"]
