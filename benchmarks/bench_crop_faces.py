"""crop_faces throughput vs plain OpenCV decode of the same demo videos, in one run.

``python benchmarks/bench_crop_faces.py [--n-videos 24] [--frame-size 192] [--repeats 3]``

Writes a small BioVid-layout demo (make_demo_data building blocks) to a temporary folder, then
times, alternately ``--repeats`` times in one process, (1) a plain OpenCV decode of every frame
of each video and (2) crop_faces on the same videos (seek to the window, decode to its end,
detection every ``detect_every`` sampled frames, box smoothing, crops), plus the plain decode
with crop_faces' decoder thread count (``DECODE_THREADS``). Prints the median wall
and CPU (process) time of each, the ratio crop_faces / decode in videos per second (goal >=
0.5; the CPU ratio is the steadier one on a shared machine, and counts any helper threads), and
frames of video per second per core (per CPU second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

from pipeline_steps.config import load_params
from pipeline_steps.crop_faces import DECODE_THREADS, CropSettings, crop_video
from pipeline_steps.face_detector import FaceDetector
from pipeline_steps.make_demo_data import generate_biovid_demo


def decode_all(path: Path, threads: int | None = None) -> int:
    """Decode and convert every frame (OpenCV's default decoder threads unless ``threads``)."""
    if threads is None:
        cap = cv2.VideoCapture(str(path))
    else:
        cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, threads])
    n = 0
    while cap.grab():
        ok, _ = cap.retrieve()
        n += ok
    cap.release()
    return n


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-videos", type=int, default=24)
    parser.add_argument("--frame-size", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
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
        frames = sum(decode_all(v) for v in videos)  # also warms the file cache
        decode: list[tuple[float, float]] = []
        decode1: list[tuple[float, float]] = []
        crop: list[tuple[float, float]] = []
        with FaceDetector(settings.model_path, settings.min_score) as det:
            crop_video(videos[0], det, settings)  # warm-up (model load)
            for _ in range(args.repeats):
                decode.append(timed(lambda: [decode_all(v) for v in videos]))
                decode1.append(timed(lambda: [decode_all(v, DECODE_THREADS) for v in videos]))
                crop.append(timed(lambda: [crop_video(v, det, settings) for v in videos]))
    n = len(videos)
    decode_s, decode_cpu = (statistics.median(t) for t in zip(*decode, strict=True))
    decode1_s, decode1_cpu = (statistics.median(t) for t in zip(*decode1, strict=True))
    crop_s, crop_cpu = (statistics.median(t) for t in zip(*crop, strict=True))
    print(f"videos: {n} x {frames // n} frames of {args.frame_size} px; cores: {os.cpu_count()}")
    print(f"median of {args.repeats} alternating runs, one process")
    print(
        f"plain OpenCV decode : {n / decode_s:8.1f} videos/s, {frames / decode_s:8.0f} frames/s, "
        f"{frames / decode_cpu:8.0f} frames per CPU second"
    )
    print(
        f"  same, {DECODE_THREADS} dec. thread: {n / decode1_s:8.1f} videos/s, "
        f"{frames / decode1_s:8.0f} frames/s, {frames / decode1_cpu:8.0f} frames per CPU second"
    )
    print(
        f"crop_faces          : {n / crop_s:8.1f} videos/s, {frames / crop_s:8.0f} frames/s, "
        f"{frames / crop_cpu:8.0f} frames per CPU second of video covered "
        f"({settings.n_frames} crops/video, detect_every {settings.detect_every})"
    )
    print(
        f"ratio crop_faces / decode: {decode_s / crop_s:.2f} wall, "
        f"{decode_cpu / crop_cpu:.2f} CPU (goal >= 0.5); vs the {DECODE_THREADS}-thread "
        f"decode crop_faces uses: {decode1_s / crop_s:.2f} wall, {decode1_cpu / crop_cpu:.2f} CPU"
    )


if __name__ == "__main__":
    main()
