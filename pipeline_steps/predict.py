"""Apply a trained visual-only student to new face videos (no physiology, audio or labels).

    python -m pipeline_steps.predict --dataset biovid --fold 0 --method mtpkdot [--seed 0] \
        --input some/video.mp4|some/folder --output predictions.csv

Each video is cropped exactly as in training (``crop_faces`` params), then the student of
``--method`` trained on ``--fold`` with student seed ``--seed`` (default: the first of
``run.seeds``; each seed's student is a separate model, none is averaged) predicts:

- classification (BioVid): one row per clip: ``video, pred, p_<class>..., face_found_ratio``;
- regression (Aff-Wild2): one row per frame: ``video, frame`` (1-based, as the annotation
  lines and ``cropped_aligned`` jpgs count), ``valence, arousal, face_found_ratio``. The video
  is cut into windows of ``window_frames`` like the index (consecutive, plus a last window
  ending at the last frame); each window's prediction is given to its frames, a frame covered
  by two windows takes the later one. A video shorter than one window is an error.

Faces: the rule of training applies (``crop_faces.min_face_ratio``): a clip (classification)
or window (regression) whose share of sampled frames with a detected face is below it, or with
no face at all, is not predicted: its row keeps ``face_found_ratio`` with empty predictions
(NaN), and a line on stderr says which and why. When no clip of the input is left, or a video
cannot be read, the command stops with an error naming the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline_steps.affwild2 import video_frame_count, window_starts
from pipeline_steps.atomic import atomic_path
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.crop_faces import CropSettings, VideoError, crop_video, crop_windows
from pipeline_steps.dataset_error import DatasetError
from pipeline_steps.face_detector import FaceDetector
from pipeline_steps.layout import layout_for
from pipeline_steps.runtime import resolve_device
from pipeline_steps.stage import resolve_seed
from pipeline_steps.student_model import load_visual_student
from pipeline_steps.train_student import METHODS

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class PredictError(ValueError):
    """A video cannot be used for prediction."""


def list_videos(path: Path) -> list[Path]:
    """``path`` itself, or the videos directly inside the folder ``path`` (sorted)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise PredictError(f"{path}: no video files ({', '.join(VIDEO_SUFFIXES)}) in folder")
        return videos
    raise PredictError(f"{path}: no such file or folder")


def unpredictable(settings: CropSettings, ratio: float) -> str:
    """Why a clip with this face-found ratio gets no prediction ("" if it gets one)."""
    if ratio == 0.0:
        return "no face found in any sampled frame"
    return settings.face_note(ratio) if settings.too_few_faces(ratio) else ""


def _say_skipped(path: Path, what: str, reason: str) -> None:
    print(f"[predict] {path}: {what} not predicted: {reason}", file=sys.stderr, flush=True)


def face_clip(
    path: Path, detector: FaceDetector, settings: CropSettings
) -> tuple[np.ndarray, float]:
    """Face crops (T, S, S, 3) of one video and its face-found ratio."""
    try:
        clip, _ = crop_video(path, detector, settings)
    except Exception as err:
        raise PredictError(f"{path}: cannot read video ({err})") from err
    return clip.crops, clip.face_found_ratio


def predict_videos(
    videos: list[Path], model: torch.nn.Module, classes: list[str], params: dict
) -> pd.DataFrame:
    """One row per video: predicted class, class probabilities and the face-found ratio
    (empty prediction for a video the face rule leaves out, see the module docstring)."""
    settings = CropSettings.from_params(params["crop_faces"])
    device = next(model.parameters()).device
    rows, reasons = [], []
    with FaceDetector(settings.model_path, settings.min_score) as detector:
        for path in videos:
            crops, ratio = face_clip(path, detector, settings)
            row = {"video": str(path), "pred": ""} | {f"p_{c}": np.nan for c in classes}
            reason = unpredictable(settings, ratio)
            if reason:
                _say_skipped(path, "video", reason)
                reasons.append(f"{path}: {reason}")
            else:
                with torch.no_grad():
                    pred, _ = model(torch.from_numpy(crops[None]).to(device))
                probs = torch.softmax(pred, 1)[0].cpu().numpy()
                row["pred"] = classes[int(probs.argmax())]
                row |= {f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)}
            rows.append(row | {"face_found_ratio": ratio})
    if len(reasons) == len(videos):
        raise PredictError(f"no video left to predict: {reasons[0]}")
    return pd.DataFrame(rows)


def video_windows(path: Path, size: int) -> pd.DataFrame:
    """The windows of ``size`` frames covering every frame of one video (crop_faces rows)."""
    try:
        count, _ = video_frame_count(path)
    except DatasetError as err:
        raise PredictError(f"{path}: cannot read video ({err})") from err
    starts = window_starts(count, size, size)
    if not starts:
        raise PredictError(f"{path}: {count} frames, fewer than one window of {size}")
    return pd.DataFrame(
        {
            "sample_id": [f"{path.stem}@{s:06d}" for s in starts],
            "media": path.name,
            "media_kind": "video",
            "region": "full",
            "start_frame": starts,
            "n_frames": size,
        }
    )


def predict_frames(
    videos: list[Path], model: torch.nn.Module, window_frames: int, params: dict
) -> pd.DataFrame:
    """One row per frame of each video: the valence and arousal of its (latest) window."""
    settings = CropSettings.from_params(params["crop_faces"])
    device = next(model.parameters()).device
    tables = []
    with FaceDetector(settings.model_path, settings.min_score) as detector:
        for path in videos:
            rows = video_windows(path, window_frames)
            try:
                crops = crop_windows(rows, path.parent, detector, settings)
            except VideoError as err:
                raise PredictError(f"{path}: cannot read video ({err})") from err
            if len(crops.sample_ids) != len(rows):
                raise PredictError(f"{path}: cannot read every window")
            reasons = [unpredictable(settings, float(r)) for r in crops.face_found_ratio]
            if all(reasons):
                raise PredictError(f"{path}: no window left to predict: {reasons[0]}")
            pred = np.full((len(rows), 2), np.nan, dtype=np.float32)
            for i, reason in enumerate(reasons):
                if reason:
                    first = int(rows["start_frame"].iloc[i]) + 1
                    _say_skipped(path, f"frames {first}-{first + window_frames - 1}", reason)
                    continue
                with torch.no_grad():
                    clip = torch.from_numpy(crops.frames[i : i + 1]).to(device)
                    pred[i] = model(clip)[0].cpu().numpy()[0]
            n = int(rows["start_frame"].iloc[-1]) + window_frames
            per_frame = np.empty((n, 2), dtype=np.float32)
            ratio = np.empty(n, dtype=np.float32)
            for k, start in enumerate(rows["start_frame"]):
                per_frame[start : start + window_frames] = pred[k]
                ratio[start : start + window_frames] = crops.face_found_ratio[k]
            tables.append(
                pd.DataFrame(
                    {
                        "video": str(path),
                        "frame": np.arange(1, n + 1),
                        "valence": per_frame[:, 0],
                        "arousal": per_frame[:, 1],
                        "face_found_ratio": ratio,
                    }
                )
            )
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument(
        "--seed", type=int, default=None, help="student seed (default: the first of run.seeds)"
    )
    parser.add_argument("--input", required=True, type=Path, help="a video file or a folder")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    videos = list_videos(args.input)
    layout = layout_for(params, args.dataset)
    seed = resolve_seed(params, args.seed)
    student = layout.student(args.fold, args.method, seed)
    if not student.exists():
        raise PredictError(f"{student}: no such student (train_student --seed {seed} first)")
    model = load_visual_student(layout, args.fold, args.method, seed)
    model.to(resolve_device(params["run"]["device"]))
    if ds["task"] == "classification":
        table = predict_videos(videos, model, list(ds["classes"]), params)
    else:
        table = predict_frames(videos, model, int(ds["window_frames"]), params)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, index=False)
    print(f"[predict] {len(table)} video(s) -> {args.output}")


if __name__ == "__main__":
    try:
        main()
    except PredictError as err:
        raise SystemExit(f"predict: error: {err}") from None
