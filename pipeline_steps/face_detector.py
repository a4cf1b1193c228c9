"""Face detection (MediaPipe BlazeFace) and a small numpy box tracker that crops face clips.

Per clip: the detector runs on every ``detect_every``-th sampled frame; frames without a good
detection get a box interpolated linearly between the nearest good detections (or held from
the first/last one at the ends); the track is smoothed with a short moving average, made
square (``margin`` of the box size added on each side, at least the longest side), moved and
shrunk to fit inside the image (never padded, so crops are never distorted), cropped and
resized with ``cv2.INTER_AREA``.

Fallback: when no face was found in any detector call of a clip, every frame gets the largest
centred square of the image; the clip's ``face_found_ratio`` is then 0, which QC can act on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline_steps.face_model import ensure_face_model


@dataclass(frozen=True)
class Box:
    """A face box in pixels (top-left corner, width, height) and its detection score."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0

    def as_array(self) -> np.ndarray:
        return np.array([self.x, self.y, self.w, self.h], dtype=np.float64)


@dataclass
class ClipCrops:
    """Face crops of one clip (T, size, size, 3) uint8 and how the faces were found."""

    crops: np.ndarray
    face_found_ratio: float
    centre_fallback: bool


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


class FaceDetector:
    """MediaPipe Tasks FaceDetector (image mode) returning the best face box of an image.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, model_path: str | os.PathLike = "auto", min_score: float = 0.5) -> None:
        import mediapipe as mp
        from mediapipe.tasks.python.core.base_options import BaseOptions
        from mediapipe.tasks.python.vision import FaceDetector as _MpFaceDetector
        from mediapipe.tasks.python.vision import FaceDetectorOptions

        self.model_path: Path = ensure_face_model(model_path)
        self.min_score = float(min_score)
        options = FaceDetectorOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            min_detection_confidence=self.min_score,
        )
        self._mp = mp
        self._detector = _MpFaceDetector.create_from_options(options)

    def detect(self, rgb: np.ndarray) -> Box | None:
        """The highest-scoring face with score >= ``min_score``, or None."""
        image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=_check_rgb(rgb))
        best: Box | None = None
        for det in self._detector.detect(image).detections:
            score = max((c.score for c in det.categories), default=0.0)
            if score < self.min_score or (best is not None and score <= best.score):
                continue
            b = det.bounding_box
            best = Box(b.origin_x, b.origin_y, b.width, b.height, float(score))
        return best

    def close(self) -> None:
        """Release the detector. Always close (or use ``with``): mediapipe's own clean-up of
        a detector still open at interpreter exit fails with a printed TypeError."""
        self._detector.close()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def detect_clip(detector: FaceDetector, frames: np.ndarray, detect_every: int) -> list[Box | None]:
    """Detect on frames 0, detect_every, 2*detect_every, ...; None elsewhere or if not found."""
    return [
        detector.detect(frame) if t % detect_every == 0 else None for t, frame in enumerate(frames)
    ]


def face_found_ratio(boxes: Sequence[Box | None], detect_every: int) -> float:
    """Share of detector calls (every ``detect_every``-th frame) that found a face."""
    called = boxes[::detect_every]
    return sum(b is not None for b in called) / len(called) if called else 0.0


def fill_track(boxes: Sequence[Box | None]) -> np.ndarray | None:
    """(T, 4) boxes x, y, w, h: gaps interpolated between detections, ends held; None if none."""
    found = [t for t, b in enumerate(boxes) if b is not None]
    if not found:
        return None
    known = np.stack([boxes[t].as_array() for t in found])
    steps = np.arange(len(boxes))
    return np.stack([np.interp(steps, found, known[:, k]) for k in range(4)], axis=1)


def smooth_track(track: np.ndarray, window: int = 3) -> np.ndarray:
    """Centred moving average over ``window`` frames (edges repeated); 1 = no smoothing."""
    window = min(int(window), len(track))
    if window <= 1:
        return track.copy()
    before = (window - 1) // 2
    padded = np.pad(track, ((before, window - 1 - before), (0, 0)), mode="edge")
    kernel = np.full(window, 1.0 / window)
    return np.stack(
        [np.convolve(padded[:, k], kernel, mode="valid") for k in range(track.shape[1])], axis=1
    )


def square_boxes(track: np.ndarray, image_hw: tuple[int, int], margin: float) -> np.ndarray:
    """(T, 3) int squares x0, y0, side: around each box centre, side = longest box side
    * (1 + 2 * margin), shrunk to fit the image and shifted inside it."""
    height, width = image_hw
    cx = track[:, 0] + track[:, 2] / 2
    cy = track[:, 1] + track[:, 3] / 2
    side = np.maximum(track[:, 2], track[:, 3]) * (1 + 2 * margin)
    side = np.clip(np.round(side), 1, min(height, width)).astype(np.int64)
    x0 = np.clip(np.round(cx - side / 2), 0, width - side).astype(np.int64)
    y0 = np.clip(np.round(cy - side / 2), 0, height - side).astype(np.int64)
    return np.stack([x0, y0, side], axis=1)


def centre_square(image_hw: tuple[int, int]) -> np.ndarray:
    """The largest centred square of the image as (x0, y0, side)."""
    height, width = image_hw
    side = min(height, width)
    return np.array([(width - side) // 2, (height - side) // 2, side], dtype=np.int64)


def crop_square(frame: np.ndarray, square: np.ndarray, size: int) -> np.ndarray:
    """Cut the square (x0, y0, side) out of ``frame`` and resize it to ``size`` pixels."""
    x0, y0, side = (int(v) for v in square)
    patch = frame[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)


def crop_clip(
    frames: np.ndarray,
    boxes: Sequence[Box | None],
    *,
    detect_every: int,
    size: int,
    margin: float,
    smooth: int = 3,
) -> ClipCrops:
    """Track, square and crop the faces of one clip (frames (T, H, W, 3), one box slot each)."""
    if len(boxes) != len(frames):
        raise ValueError(f"{len(boxes)} boxes for {len(frames)} frames")
    image_hw = (int(frames.shape[1]), int(frames.shape[2]))
    track = fill_track(boxes)
    if track is None:
        squares = np.tile(centre_square(image_hw), (len(frames), 1))
    else:
        squares = square_boxes(smooth_track(track, smooth), image_hw, margin)
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for t, (frame, square) in enumerate(zip(frames, squares, strict=True)):
        crops[t] = crop_square(frame, square, size)
    return ClipCrops(crops, face_found_ratio(boxes, detect_every), track is None)
