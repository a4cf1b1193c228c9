"""Pipeline step crop_faces: sample frames of each video, detect and crop faces, write a shard.

``python -m pipeline_steps.crop_faces --params params.yaml --dataset biovid --shard I``

Shard I of ``crop_faces.n_shards`` takes the index rows (sorted by ``sample_id``) at positions
``p % n_shards == I``. For each video, ``n_frames`` frames are sampled at the centres of
``n_frames`` equal segments of ``window_s`` (frame index ``round(t * fps)``; decoding starts at
the first sampled frame (a frame-exact seek, else a read from frame 0) and only the sampled
frames are converted to images). Faces are detected and cropped by
:mod:`pipeline_steps.face_detector`; the crops go to ``layout.video_shard(I)`` (schema in
:mod:`pipeline_steps.shards`): ``frames`` uint8 (T, size, size, 3) RGB, extra column
``face_found_ratio``; metadata ``fps`` (rate of the stored frames, n_frames / window length),
``source_fps`` (frame rates of the videos), ``window_s``, ``n_frames``, ``size``, ``color``.

Aff-Wild2 windows (index with ``start_frame``/``n_frames``/``media`` columns, see
:mod:`pipeline_steps.affwild2`): every frame of the window is kept (T = ``n_frames`` of the
index, at the video's own rate: metadata ``fps`` is then the source rate); shards are dealt by
media file (all windows of one video in one shard) and each video is decoded once, sequentially.
``region`` left/right crops that half of the frame before detection (two-person videos):
frames are held whole and each window takes its own half, so the ``_left`` and ``_right``
windows of one video (also those starting on the same frame) each get their own person.
Frames from a ``cropped_aligned`` folder are read as jpgs (a missing number repeats the nearest
earlier frame).

Detection runs on every ``detect_every``-th frame of a clip; boxes in between are interpolated
and smoothed (:mod:`pipeline_steps.face_detector`). Bad videos follow
``index_dataset.on_bad_sample`` (:mod:`pipeline_steps.qc`): an error naming the file, or the
sample is left out of the shard and recorded; a bad video in error mode ends the step with
exit code 1 and one line (:func:`pipeline_steps.dataset_error.run_step`).

Faces: a clip (Aff-Wild2: window) whose share of detector calls that found a face
(``face_found_ratio``) is below ``crop_faces.min_face_ratio`` is skipped and recorded in
``qc_report.json`` in either policy (its crops stay in the shard; every training and
evaluation step leaves it out, :func:`pipeline_steps.fold_data.load_index`). With
``min_face_ratio: 0`` a clip without any detected face is kept (centre-crop fallback) and
listed as a QC warning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline_steps.affwild2 import FRAME_TOLERANCE
from pipeline_steps.config import ParamsError, dataset_params, load_params, step_parser
from pipeline_steps.dataset_error import DatasetError, run_step
from pipeline_steps.face_detector import ClipCrops, FaceDetector, crop_clip, detect_clip
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import QcLog
from pipeline_steps.shards import write_shard


class VideoError(DatasetError):
    """A video cannot be used: missing, unreadable, or too short for the sampling window."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class CropSettings:
    """The ``crop_faces`` parameters used per video."""

    window_s: tuple[float, float]
    n_frames: int
    size: int
    margin: float
    detect_every: int
    min_score: float
    model_path: str
    min_face_ratio: float = 0.0

    @classmethod
    def from_params(cls, section: dict[str, Any]) -> CropSettings:
        start, end = (float(v) for v in section["window_s"])
        if end <= start:
            raise ParamsError(f"crop_faces.window_s: end {end} must be after start {start}")
        return cls(
            window_s=(start, end),
            n_frames=int(section["n_frames"]),
            size=int(section["size"]),
            margin=float(section["margin"]),
            detect_every=int(section["detect_every"]),
            min_score=float(section["min_score"]),
            model_path=str(section["model_path"]),
            min_face_ratio=float(section.get("min_face_ratio", 0.0)),
        )

    def too_few_faces(self, ratio: float) -> bool:
        """The clip's share of detector calls with a face is below ``min_face_ratio``."""
        return ratio < self.min_face_ratio

    def face_note(self, ratio: float) -> str:
        return (
            f"face found in {ratio:.0%} of sampled frames, below crop_faces.min_face_ratio "
            f"{self.min_face_ratio:g}"
        )

    @property
    def sample_fps(self) -> float:
        """Rate of the stored frames."""
        return self.n_frames / (self.window_s[1] - self.window_s[0])


def sample_times(window_s: tuple[float, float], n_frames: int) -> np.ndarray:
    """Centres of ``n_frames`` equal segments of the window, seconds."""
    start, end = window_s
    return start + (np.arange(n_frames) + 0.5) * (end - start) / n_frames


def frame_indices(times: np.ndarray, fps: float) -> np.ndarray:
    """Index of the frame shown nearest each time (frame k is at k / fps)."""
    return np.maximum(np.round(np.asarray(times) * fps), 0).astype(np.int64)


def _seek(cap: cv2.VideoCapture, target: int) -> bool:
    """Start decoding at frame ``target``; False if the capture did not land exactly there.

    OpenCV's FFmpeg backend seeks to the key frame before ``target`` and decodes forward to it,
    so the frames that follow are the ones a sequential read gives (checked in the tests for
    MPEG-4 part 2, H.264 with B-frames and VP9). A target at or past the container's frame
    count is not sought: the sequential read then reports how many frames the video has.
    """
    if target <= 0:
        return True
    if not target < cap.get(cv2.CAP_PROP_FRAME_COUNT):
        return False
    return bool(cap.set(cv2.CAP_PROP_POS_FRAMES, target)) and (
        int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == target
    )


def _read_indices(
    cap: cv2.VideoCapture, indices: np.ndarray, start: int = 0
) -> tuple[np.ndarray | None, int]:
    """Decode frames ``start``.. sequentially up to the last index; keep those at ``indices``.

    Only the kept frames are converted (``retrieve``), straight into one (T, H, W, 3) RGB array
    in the order of ``indices``. Returns it (None if a frame was missing) and the position
    reached (the video's frame count if it ended before the last index).
    """
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(indices.tolist()):
        slots.setdefault(index, []).append(slot)
    out: np.ndarray | None = None
    last = int(indices.max())
    n_read = start
    n_kept = 0
    while n_read <= last and cap.grab():
        if n_read in slots:
            ok, bgr = cap.retrieve()
            if not ok:
                break
            if out is None:
                out = np.empty((len(indices), *bgr.shape), dtype=np.uint8)
            first, *rest = slots[n_read]
            cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=out[first])
            for slot in rest:
                out[slot] = out[first]
            n_kept += 1 + len(rest)
        n_read += 1
    return (out if n_kept == len(indices) else None), n_read


DECODE_THREADS = 1
"""FFmpeg decoder threads per video. The rule runs with ``threads: 1`` (shards are the unit of
parallelism); for small frames one thread is also faster than FFmpeg's default of one per
core (thread hand-over costs more than it saves)."""


def open_capture(path: Path) -> cv2.VideoCapture:
    """``cv2.VideoCapture`` of a file with :data:`DECODE_THREADS` decoder threads."""
    return cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, DECODE_THREADS])


def _opened_capture(path: Path) -> cv2.VideoCapture:
    """An opened capture of an existing video file, or a :class:`VideoError`."""
    if not path.is_file():
        raise VideoError(path, "video file not found")
    cap = open_capture(path)
    if not cap.isOpened():
        cap.release()
        raise VideoError(path, "OpenCV cannot open the video (corrupt or unsupported codec)")
    return cap


def _open_video(path: Path) -> tuple[cv2.VideoCapture, float]:
    """An opened capture and its (valid) frame rate, or a :class:`VideoError`."""
    cap = _opened_capture(path)
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    if not math.isfinite(fps) or fps <= 0:
        cap.release()
        raise VideoError(path, f"the video reports no valid frame rate ({fps})")
    return cap, fps


def read_frames(
    path: Path, window_s: tuple[float, float], n_frames: int, seek: bool = True
) -> tuple[np.ndarray, float]:
    """The sampled frames (T, H, W, 3) uint8 RGB of a video, and its frame rate.

    With ``seek`` decoding starts at the first sampled frame (see :func:`_seek`); if the
    capture cannot land there exactly, the video is reopened and read from frame 0.
    """
    cap, fps = _open_video(path)
    try:
        indices = frame_indices(sample_times(window_s, n_frames), fps)
        start = int(indices.min()) if seek else 0
        if start and not _seek(cap, start):
            cap.release()
            cap, _ = _open_video(path)
            start = 0
        frames, n_read = _read_indices(cap, indices, start)
    finally:
        cap.release()
    if frames is None:
        raise VideoError(
            path,
            f"too few frames: decoded {n_read} ({n_read / fps:.2f} s at {fps:g} fps), "
            f"window_s {list(window_s)} needs frame {int(indices.max())}",
        )
    return frames, fps


def crop_video(
    path: Path, detector: FaceDetector, settings: CropSettings
) -> tuple[ClipCrops, float]:
    """Face crops of one video and the video's frame rate."""
    frames, fps = read_frames(path, settings.window_s, settings.n_frames)
    boxes = detect_clip(detector, frames, settings.detect_every)
    clip = crop_clip(
        frames,
        boxes,
        detect_every=settings.detect_every,
        size=settings.size,
        margin=settings.margin,
    )
    return clip, fps


WINDOW_COLUMNS = ("start_frame", "n_frames", "media", "media_kind", "region")


def read_index(path: Path) -> pd.DataFrame:
    """``sample_id`` and ``video`` (plus the Aff-Wild2 window columns) sorted by ``sample_id``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset index not found (run index_dataset first)")
    index = pd.read_parquet(path)
    missing = {"sample_id", "video"} - set(index.columns)
    if missing:
        raise ValueError(f"{path}: index lacks column(s) {sorted(missing)}")
    extra = [c for c in WINDOW_COLUMNS if c in index.columns]
    index = index[["sample_id", "video", *extra]].astype({"sample_id": str, "video": str})
    return index.sort_values("sample_id", kind="stable").reset_index(drop=True)


def shard_rows(index: pd.DataFrame, shard: int, n_shards: int) -> pd.DataFrame:
    """Rows at positions ``p % n_shards == shard``; windows: whole media files dealt so."""
    if not 0 <= shard < n_shards:
        raise ParamsError(f"--shard {shard}: must be in 0..{n_shards - 1} (crop_faces.n_shards)")
    if "media" in index.columns:
        media = sorted(index["media"].unique())
        mine = set(media[shard::n_shards])
        return index[index["media"].isin(mine)].reset_index(drop=True)
    return index.iloc[shard::n_shards].reset_index(drop=True)


@dataclass
class ShardCrops:
    """Everything that goes into one video shard."""

    sample_ids: list[str]
    frames: np.ndarray
    face_found_ratio: np.ndarray
    source_fps: list[float]
    n_centre_fallback: int


def crop_shard(
    rows: pd.DataFrame,
    video_root: Path,
    detector: FaceDetector | None,
    settings: CropSettings,
    on_error: Callable[[VideoError], None] | None = None,
) -> ShardCrops:
    """Crop every row's video (``detector`` may be None only when there are no rows).

    A :class:`VideoError` is raised, unless ``on_error`` is given: then it is passed the error
    and the sample is left out (the hook for a QC skip mode).
    """
    s, t = settings.size, settings.n_frames
    frames = np.empty((len(rows), t, s, s, 3), dtype=np.uint8)
    ratios = np.empty(len(rows), dtype=np.float32)
    ids: list[str] = []
    fps_seen: set[float] = set()
    n_fallback = 0
    every = max(1, len(rows) // 10)
    if "media" in rows.columns:
        return crop_windows(rows, video_root, detector, settings, on_error)
    for pos, (sample_id, video) in enumerate(zip(rows["sample_id"], rows["video"], strict=True)):
        try:
            clip, fps = crop_video(video_root / video, detector, settings)
        except VideoError as err:
            if on_error is None:
                raise
            err.sample_id = sample_id
            on_error(err)
            continue
        frames[len(ids)] = clip.crops
        ratios[len(ids)] = clip.face_found_ratio
        ids.append(sample_id)
        fps_seen.add(round(fps, 3))
        n_fallback += clip.centre_fallback
        if (pos + 1) % every == 0 and pos + 1 < len(rows):
            print(f"[crop_faces]   {pos + 1}/{len(rows)} videos", flush=True)
    n = len(ids)
    return ShardCrops(ids, frames[:n], ratios[:n], sorted(fps_seen), n_fallback)


def _region(frame: np.ndarray, region: str) -> np.ndarray:
    half = frame.shape[1] // 2
    if region == "left":
        return frame[:, :half]
    if region == "right":
        return frame[:, half:]
    return frame


def _media_frames(path: Path, kind: str, last: int) -> tuple[Iterator[np.ndarray], float]:
    """Frames 0..last (RGB) of a video file or a cropped_aligned folder, and the frame rate."""
    if kind == "frames":
        if not path.is_dir():
            raise VideoError(path, "frames folder not found")

        def from_jpgs() -> Iterator[np.ndarray]:
            held = None
            for i in range(last + 1):
                jpg = path / f"{i + 1:05d}.jpg"
                img = cv2.imread(str(jpg)) if jpg.exists() else None
                if img is not None:
                    held = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
                if held is None:
                    raise VideoError(jpg, "no readable frame at or before this one")
                yield held

        return from_jpgs(), 0.0
    cap = _opened_capture(path)
    fps = float(cap.get(cv2.CAP_PROP_FPS))

    def decoded() -> Iterator[np.ndarray]:
        try:
            held, n = None, 0
            while n <= last and cap.grab():
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                held = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                n += 1
                yield held
            if n <= last:
                if held is None or last - n + 1 > FRAME_TOLERANCE:
                    raise VideoError(path, f"decoding ended at frame {n}, frame {last} needed")
                for _ in range(last - n + 1):  # container over-reports by a frame or two
                    yield held
        finally:
            cap.release()

    return decoded(), fps


def crop_windows(
    rows: pd.DataFrame,
    root: Path,
    detector: FaceDetector | None,
    settings: CropSettings,
    on_error: Callable[[VideoError], None] | None = None,
) -> ShardCrops:
    """Crop Aff-Wild2 windows: each media file decoded once, every frame of each window."""
    sizes = rows["n_frames"].unique() if len(rows) else [settings.n_frames]
    if len(sizes) != 1:
        raise ValueError(f"windows of different lengths in one shard: {sorted(sizes)}")
    t, s = int(sizes[0]), settings.size
    crops = np.empty((len(rows), t, s, s, 3), dtype=np.uint8)
    ratios = np.empty(len(rows), dtype=np.float32)
    ids: list[str] = []
    fps_seen: set[float] = set()
    n_fallback = 0
    for media, group in rows.groupby("media", sort=True):
        group = group.sort_values("start_frame")
        starts = group["start_frame"].to_numpy()
        last = int(starts.max()) + t - 1
        buffer: dict[int, np.ndarray] = {}
        pending = list(group.itertuples(index=False))
        try:
            frames, fps = _media_frames(root / media, pending[0].media_kind, last)
            for i, frame in enumerate(frames):
                buffer[i] = frame  # whole: windows of both halves may need it
                while pending and pending[0].start_frame + t - 1 == i:
                    row = pending.pop(0)
                    clip = np.stack(
                        [_region(buffer[j], row.region) for j in range(row.start_frame, i + 1)]
                    )
                    boxes = detect_clip(detector, clip, settings.detect_every)
                    out = crop_clip(
                        clip,
                        boxes,
                        detect_every=settings.detect_every,
                        size=s,
                        margin=settings.margin,
                    )
                    crops[len(ids)] = out.crops
                    ratios[len(ids)] = out.face_found_ratio
                    n_fallback += out.centre_fallback
                    ids.append(row.sample_id)
                first_needed = pending[0].start_frame if pending else i + 1
                for j in [j for j in buffer if j < first_needed]:
                    del buffer[j]
            if fps:
                fps_seen.add(round(fps, 3))
        except VideoError as err:
            if on_error is None:
                raise
            for row in pending:
                err.sample_id = row.sample_id
                on_error(err)
    n = len(ids)
    return ShardCrops(ids, crops[:n], ratios[:n], sorted(fps_seen), n_fallback)


def run(params: dict[str, Any], dataset: str, shard: int) -> Path:
    """Crop shard ``shard`` of ``dataset`` and write its video shard; return the path."""
    section = params["crop_faces"]
    settings = CropSettings.from_params(section)
    layout = layout_for(params, dataset)
    video_root = Path(dataset_params(params, dataset)["root"])
    rows = shard_rows(read_index(layout.index), shard, int(section["n_shards"]))
    qc = QcLog(f"crop_faces-{shard}", params["index_dataset"]["on_bad_sample"])
    detector = FaceDetector(settings.model_path, settings.min_score) if len(rows) else None
    start = time.perf_counter()
    try:
        result = crop_shard(
            rows,
            video_root,
            detector,
            settings,
            lambda err: qc.bad(getattr(err, "sample_id", "?"), err, err.path),
        )
    finally:
        if detector is not None:
            detector.close()
    windows = "media" in rows.columns
    source = dict(zip(rows["sample_id"], rows["media" if windows else "video"], strict=True))
    for sample_id, ratio in zip(result.sample_ids, result.face_found_ratio, strict=True):
        if settings.too_few_faces(float(ratio)):
            qc.skip(sample_id, video_root / source[sample_id], settings.face_note(float(ratio)))
        elif ratio == 0.0:
            qc.warn(sample_id, video_root / source[sample_id], "no face found: centre crop used")
    out = layout.video_shard(shard)
    n_frames = int(result.frames.shape[1]) if windows else settings.n_frames
    write_shard(
        out,
        result.sample_ids,
        result.frames,
        array_column="frames",
        modality="video",
        metadata={
            "fps": result.source_fps[0] if windows and result.source_fps else settings.sample_fps,
            "source_fps": result.source_fps,
            "window_s": None if windows else list(settings.window_s),
            "n_frames": n_frames,
            "size": settings.size,
            "color": "RGB",
        },
        extra={"face_found_ratio": result.face_found_ratio},
    )
    qc.write(layout)
    _print_summary(dataset, shard, int(section["n_shards"]), result, time.perf_counter() - start)
    return out


def _print_summary(dataset: str, shard: int, n_shards: int, res: ShardCrops, secs: float) -> None:
    n = len(res.sample_ids)
    found = f"{float(np.mean(res.face_found_ratio)):.0%}" if n else "-"
    print(
        f"[crop_faces] {dataset} shard {shard}/{n_shards}: {n} videos in {secs:.1f} s "
        f"({secs / max(n, 1):.2f} s/video), face found in {found} of detector calls, "
        f"{res.n_centre_fallback} centre-cropped",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = step_parser("Detect and crop faces into one video shard.")
    parser.add_argument("--shard", type=int, required=True, help="shard number, 0..n_shards-1")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    out = run(params, args.dataset, args.shard)
    print(f"[crop_faces] wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    run_step("crop_faces", main)
