"""Aff-Wild2 (ABAW valence-arousal track) as distributed, read into windows of T frames.

Layout under ``datasets.<name>.root``::

    annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt
                      (``VA_Estimation_Challenge/`` directly under the root is accepted too)
    videos/**/<name>.mp4 | .avi            raw videos, any sub-folders (batch1/, batch2/ ...)
    cropped_aligned/<video>/00001.jpg ...  organiser face crops (used when no video file)

Annotation files: a header line ``valence,arousal``, then one ``valence,arousal`` line per video
frame (line i+2 <-> frame i <-> ``cropped_aligned/<video>/<i+1:05d>.jpg``); ``-5`` marks an
unannotated frame (kept in the labels, excluded from loss and metrics downstream). Values must
lie in [-1, 1] or be -5. A line that is not two numbers, or a value out of range, stops
``index_dataset`` naming the file and line (``on_bad_sample: error``), or (``skip``) leaves
that frame unlabelled (-5) and is recorded as a QC warning with the file and line; the rest of
the video is kept. A file without the header or without any label line is a bad sample.

Two-person videos: annotations ``<name>_left`` / ``<name>_right`` refer to one video file
``<name>`` (the left or right half of the frame, ``region``) and share its audio.

Samples: windows of ``window_frames`` (T) consecutive frames starting every ``window_stride``
frames (0 = T), plus one final window ending at the last usable frame so every annotated frame
is covered; windows whose frames are all -5 are dropped. Sample id ``<video>@<start:06d>``.
Index columns: sample_id, subject (the video's person group: ``<name>`` without _left/_right,
so both persons of a video stay in one split), video, set (Train_Set/Validation_Set), media
(relative path of the video file or frames folder), media_kind (video|frames), region
(full|left|right), audio (relative path of the file whose audio track is used, "" if none),
start_frame, n_frames, valence and arousal (list<double>, T per-frame labels).

Frame-count mismatches: the usable length of a video is ``min(annotation frames, frames in the
media)``, where the media count is the container's frame-count property (video) or the highest
jpg number (frames). Real files are often off by one; the extra labels or frames are ignored
(the difference is recorded as a QC warning when it exceeds ``FRAME_TOLERANCE``). When the
container over-reports and decoding ends early, crop_faces repeats the last decoded frame for
at most ``FRAME_TOLERANCE`` frames, else the window is a bad sample. A missing jpg inside
cropped_aligned (no face found by the organisers) is replaced by the nearest earlier one.

Protocol (Part 1, 8): Validation_Set videos are ``test`` in every fold; fold k
(``split_<k>``, k < index_dataset.n_folds) carves its own seeded ``val_fraction`` of the
Train_Set person groups as ``val`` (model selection), the rest ``train``. The folds thus share
the test set and differ in the validation subjects. ``test_fold`` is 0 for Validation_Set rows
and -1 for Train_Set rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipeline_steps.dataset_error import DatasetError
from pipeline_steps.dataset_inputs import IndexInput
from pipeline_steps.qc import QcLog

SETS = ("Train_Set", "Validation_Set")
UNANNOTATED = -5.0
FRAME_TOLERANCE = 2
VIDEO_SUFFIXES = (".mp4", ".avi")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def annotation_dir(root: Path) -> Path:
    for cand in (
        root / "annotations" / "VA_Estimation_Challenge",
        root / "VA_Estimation_Challenge",
    ):
        if cand.is_dir():
            return cand
    raise DatasetError(f"{root}: no annotations/VA_Estimation_Challenge folder")


def person_group(video: str) -> tuple[str, str]:
    """(video file name, region): ``x_left`` -> (x, left); ``x`` -> (x, full)."""
    for side in ("left", "right"):
        if video.endswith(f"_{side}"):
            return video[: -len(side) - 1], side
    return video, "full"


def _parse_line(line: str) -> tuple[list[float] | None, str]:
    """(valence, arousal) of one label line, or None and the problem."""
    parts = line.split(",")
    if len(parts) != 2:
        return None, f"not 'valence,arousal' ({len(parts)} fields)"
    try:
        pair = [float(parts[0]), float(parts[1])]
    except ValueError:
        return None, f"not 'valence,arousal' ({line.strip()!r} is not two numbers)"
    if not all(np.isfinite(v) and (abs(v) <= 1.0 or v == UNANNOTATED) for v in pair):
        return None, f"value outside [-1, 1] and not -5 ({line.strip()})"
    return pair, ""


def read_annotation(path: Path, qc: QcLog | None = None) -> np.ndarray:
    """(N, 2) float32 valence, arousal per frame; -5 kept for unannotated frames, and set for
    a bad line (``qc`` in skip mode; in error mode, the default, a bad line raises)."""
    qc = qc or QcLog("index_dataset")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable annotation file ({err})") from err
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines or lines[0].replace(" ", "").lower() != "valence,arousal":
        raise DatasetError(f"{path}: first line must be the header 'valence,arousal'")
    if len(lines) < 2:
        raise DatasetError(f"{path}: no frame labels after the header")
    values = np.full((len(lines) - 1, 2), UNANNOTATED, dtype=np.float32)
    for i, line in enumerate(lines[1:]):
        pair, problem = _parse_line(line)
        if pair is None:
            qc.bad_line(path.stem, path, i + 2, problem)
        else:
            values[i] = pair
    return values


def index_videos(root: Path) -> dict[str, Path]:
    """Video file name (stem) -> path relative to ``root``, from ``videos/`` (any depth)."""
    found: dict[str, Path] = {}
    base = root / "videos"
    if base.is_dir():
        for path in sorted(base.rglob("*")):
            if path.suffix.lower() in VIDEO_SUFFIXES and path.is_file():
                found.setdefault(path.stem, path.relative_to(root))
    return found


def _uses_cropped_aligned(root: Path, ann: Path) -> bool:
    """Some annotated video has no video file and is read from ``cropped_aligned/``."""
    folder = root / "cropped_aligned"
    if not folder.is_dir():
        return False
    videos = index_videos(root)
    return any(
        person_group(p.stem)[0] not in videos and (folder / p.stem).is_dir()
        for set_name in SETS
        for p in (ann / set_name).glob("*.txt")
    )


def index_inputs(root: Path, ds: dict) -> list[IndexInput]:
    """What an Aff-Wild2 index is built from: both sets' annotation folders, ``videos/`` and,
    when some video is read from it, ``cropped_aligned/`` (its per-video folders)."""
    root = Path(root)
    ann = annotation_dir(root)
    inputs = [IndexInput(ann / s, (".txt",)) for s in SETS]
    inputs.append(IndexInput(root / "videos", VIDEO_SUFFIXES))
    if _uses_cropped_aligned(root, ann):
        inputs.append(IndexInput(root / "cropped_aligned", (), depth=1))
    return inputs


def video_frame_count(path: Path) -> tuple[int, float]:
    """Container frame count and frame rate; a bad sample if it cannot be opened."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DatasetError(f"{path}: OpenCV cannot open the video (corrupt or unsupported)")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if not np.isfinite(fps) or fps <= 0 or count <= 0:
        raise DatasetError(f"{path}: no valid frame rate ({fps}) or frame count ({count})")
    return count, fps


def frames_count(folder: Path) -> int:
    numbers = [int(p.stem) for p in folder.glob("*.jpg") if p.stem.isdigit()]
    if not numbers:
        raise DatasetError(f"{folder}: no numbered jpg frames")
    return max(numbers)


def window_starts(n: int, size: int, stride: int) -> list[int]:
    """Starts of windows of ``size`` over ``n`` frames, plus a final one ending at ``n``."""
    if n < size:
        return []
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] + size < n:
        starts.append(n - size)
    return starts


def _video_rows(
    root: Path, video: str, set_name: str, labels: np.ndarray, videos: dict, qc: QcLog
) -> tuple[list[dict], int]:
    """The index fields shared by a video's windows, and its usable length."""
    name, region = person_group(video)
    if not _NAME.match(video):
        source = annotation_dir(root) / set_name / f"{video}.txt"
        raise DatasetError(f"{source}: video name {video!r} would resolve outside the dataset root")
    audio = ""
    if name in videos:
        media, kind = videos[name], "video"
        count, _ = video_frame_count(root / media)
        audio = str(media)
    elif (root / "cropped_aligned" / video).is_dir():
        media, kind, region = Path("cropped_aligned") / video, "frames", "full"
        count = frames_count(root / media)
    else:
        raise DatasetError(
            f"{root}: no video videos/**/{name}.mp4|.avi and no cropped_aligned/{video}/"
        )
    n = min(len(labels), count)
    if abs(len(labels) - count) > FRAME_TOLERANCE:
        qc.warn(video, root / media, f"{len(labels)} labelled frames, {count} in the media")
    return [
        {
            "subject": name,
            "video": video,
            "set": set_name,
            "media": str(media),
            "media_kind": kind,
            "region": region,
            "audio": audio,
        }
    ], n


def read_windows(root: Path, ds: dict, qc: QcLog | None = None) -> pd.DataFrame:
    """All windows of every annotated video of both sets (see the module docstring)."""
    qc = qc or QcLog("index_dataset")
    root = Path(root)
    ann = annotation_dir(root)
    size = int(ds["window_frames"])
    stride = int(ds.get("window_stride") or 0) or size
    videos = index_videos(root)
    rows = []
    for set_name in SETS:
        for path in sorted((ann / set_name).glob("*.txt")):
            video = path.stem
            try:
                labels = read_annotation(path, qc)
                (base,), n = _video_rows(root, video, set_name, labels, videos, qc)
            except DatasetError as err:
                qc.bad(video, err, path)
                continue
            for start in window_starts(n, size, stride):
                lab = labels[start : start + size]
                if (lab == UNANNOTATED).all():
                    continue
                rows.append(
                    {
                        "sample_id": f"{video}@{start:06d}",
                        **base,
                        "start_frame": start,
                        "n_frames": size,
                        "valence": lab[:, 0].tolist(),
                        "arousal": lab[:, 1].tolist(),
                    }
                )
    if not rows:
        raise DatasetError(f"{ann}: no window of {size} frames with a label in any video")
    return pd.DataFrame(rows).sort_values("sample_id").reset_index(drop=True)


def assign_split(
    index: pd.DataFrame, val_fraction: float, seed: int, n_folds: int = 1
) -> pd.DataFrame:
    """Validation_Set = test in every fold; fold k carves its own seeded share of the Train_Set
    person groups as val (so ``n_folds`` repeats differ only in the model-selection subjects,
    and the spread over folds measures the sensitivity to that choice)."""
    train_groups = sorted(index.loc[index["set"] == "Train_Set", "subject"].unique())
    if len(train_groups) < 2:
        raise DatasetError(f"{len(train_groups)} Train_Set video(s): cannot carve validation")
    if not (index["set"] == "Validation_Set").any():
        raise DatasetError("no Validation_Set window: nothing to test on")
    n_val = min(len(train_groups) - 1, max(1, int(round(val_fraction * len(train_groups)))))
    out = index.copy()
    test = out["set"] == "Validation_Set"
    out["test_fold"] = np.where(test, 0, -1).astype("int64")
    for k in range(n_folds):
        val = set(np.random.default_rng([seed, k]).permutation(train_groups)[:n_val])
        split = np.where(test, "test", np.where(out["subject"].isin(val), "val", "train"))
        out[f"split_{k}"] = split
    return out
