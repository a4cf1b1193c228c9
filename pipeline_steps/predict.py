"""Apply a trained visual-only student to new face videos (no physiology, audio or labels).

    python -m pipeline_steps.predict --dataset biovid --fold 0 --method mtpkdot \
        --input some/video.mp4|some/folder --output predictions.csv

Each video is cropped exactly as in training (``crop_faces`` params), then the student of
``--method`` trained on ``--fold`` predicts one row per clip. A video that cannot be read, or
in which no face is found in any sampled frame, stops with an error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline_steps.atomic import atomic_path
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.crop_faces import CropSettings, crop_video
from pipeline_steps.face_detector import FaceDetector
from pipeline_steps.layout import layout_for
from pipeline_steps.runtime import resolve_device
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


def face_clip(
    path: Path, detector: FaceDetector, settings: CropSettings
) -> tuple[np.ndarray, float]:
    """Face crops (T, S, S, 3) of one video; refuses a video with no detected face."""
    try:
        clip, _ = crop_video(path, detector, settings)
    except Exception as err:
        raise PredictError(f"{path}: cannot read video ({err})") from err
    if clip.face_found_ratio == 0.0:
        raise PredictError(f"{path}: no face found in any sampled frame")
    return clip.crops, clip.face_found_ratio


def predict_videos(
    videos: list[Path], model: torch.nn.Module, classes: list[str], params: dict
) -> pd.DataFrame:
    """One row per video: predicted class, class probabilities and the face-found ratio."""
    settings = CropSettings.from_params(params["crop_faces"])
    device = next(model.parameters()).device
    rows = []
    with FaceDetector(settings.model_path, settings.min_score) as detector:
        for path in videos:
            crops, ratio = face_clip(path, detector, settings)
            with torch.no_grad():
                pred, _ = model(torch.from_numpy(crops[None]).to(device))
            probs = torch.softmax(pred, 1)[0].cpu().numpy()
            row = {"video": str(path), "pred": classes[int(probs.argmax())]}
            row |= {f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)}
            rows.append(row | {"face_found_ratio": ratio})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__.splitlines()[0])
    parser.add_argument("--fold", type=int, required=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--input", required=True, type=Path, help="a video file or a folder")
    parser.add_argument("--output", required=True, type=Path, help="CSV to write")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    if ds["task"] != "classification":
        raise SystemExit("predict: per-frame regression output is not wired yet")
    videos = list_videos(args.input)
    layout = layout_for(params, args.dataset)
    model = load_visual_student(layout, args.fold, args.method)
    model.to(resolve_device(params["run"]["device"]))
    table = predict_videos(videos, model, list(ds["classes"]), params)
    with atomic_path(args.output) as tmp:
        table.to_csv(tmp, index=False)
    print(f"[predict] {len(table)} video(s) -> {args.output}")


if __name__ == "__main__":
    try:
        main()
    except PredictError as err:
        raise SystemExit(f"predict: error: {err}") from None
