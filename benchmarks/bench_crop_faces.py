"""crop_faces throughput vs plain OpenCV decode of the same demo videos, in one run.

``python benchmarks/bench_crop_faces.py [--n-videos 24] [--frame-size 192]``

Writes a small BioVid-layout demo (make_demo_data building blocks) to a temporary folder, then
times (1) a plain OpenCV decode of every frame of each video and (2) crop_faces on the same
videos (sequential decode up to the window end, detection every ``detect_every`` sampled
frames, box smoothing, crops), single process. Prints the ratio crop_faces / decode in videos
per second (goal >= 0.5) and decoded frames per second per core.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2

from pipeline_steps.config import load_params
from pipeline_steps.crop_faces import CropSettings, crop_video
from pipeline_steps.face_detector import FaceDetector
from pipeline_steps.make_demo_data import generate_biovid_demo


def decode_all(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        ok, _ = cap.retrieve()
        n += ok
    cap.release()
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-videos", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=192)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    cfg = dict(params["make_demo_data"], frame_size=args.frame_size, n_subjects=2)
    cfg["samples_per_class"] = max(1, args.n_videos // 4)
    settings = CropSettings.from_params(params["crop_faces"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        generate_biovid_demo(root, cfg)
        videos = sorted(root.glob("video/*/*.mp4"))
        start = time.perf_counter()
        frames = sum(decode_all(v) for v in videos)
        decode_s = time.perf_counter() - start
        with FaceDetector(settings.model_path, settings.min_score) as det:
            crop_video(videos[0], det, settings)  # warm-up (model load)
            start = time.perf_counter()
            for v in videos:
                crop_video(v, det, settings)
            crop_s = time.perf_counter() - start
    n = len(videos)
    print(f"videos: {n} x {frames // n} frames of {args.frame_size} px; cores: {os.cpu_count()}")
    print(f"plain OpenCV decode : {n / decode_s:8.1f} videos/s, {frames / decode_s:8.0f} frames/s")
    print(
        f"crop_faces          : {n / crop_s:8.1f} videos/s, {frames / crop_s:8.0f} frames/s "
        f"of video covered (per core, 1 process; {settings.n_frames} crops/video, "
        f"detect_every {settings.detect_every})"
    )
    print(f"ratio crop_faces / decode: {decode_s / crop_s:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
