"""Pipeline step extract_audio: audio track -> 16 kHz mono -> log-mel frames per window.

``python -m pipeline_steps.extract_audio --params params.yaml --dataset affwild2``

For every index row with an ``audio`` file (Aff-Wild2: the video file; ``<name>_left`` and
``<name>_right`` share the audio of ``<name>``), the audio track is decoded once per file by
the ffmpeg binary of ``imageio-ffmpeg`` to ``sample_rate_hz`` mono float32. Each window (video
frames ``start_frame`` .. ``start_frame + T - 1``) gets a log-mel spectrogram aligned to those
frames: ``mels_per_frame`` columns per video frame (hop = sample_rate / (fps * mels_per_frame),
rounded to a sample; the per-window start is exact, so rounding never accumulates over a video),
preceded by ``context_frames`` frames of earlier audio (zeros before the start of the file).
Column ``(context_frames + j) * mels_per_frame + m`` ends at the time of video frame
``start_frame + j`` + (m + 1) / (fps * mels_per_frame). Window: Hann, ``win_ms``; power mel
(``n_mels`` bands, librosa/Slaney) in dB (``10 log10(max(power, 1e-10))``, no reference scaling).

Shard ``features/audio.parquet`` (schema: :mod:`pipeline_steps.shards`): ``logmel`` float32
(n_mels, (context_frames + T) * mels_per_frame), units dB; metadata ``sample_rate_hz``,
``n_mels``, ``mels_per_frame``, ``context_frames``, ``video_fps`` (per-file rates seen).

librosa compiles numba code on first use (~17 s on a fresh machine): the JIT cache goes to
``$NUMBA_CACHE_DIR`` if set, else ``~/.cache/mtpkdot/numba``.

Bad input (missing file, no audio stream, undecodable audio) follows
``index_dataset.on_bad_sample``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import layout_for
from pipeline_steps.qc import BadSampleError, QcLog
from pipeline_steps.shards import write_shard

os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "mtpkdot" / "numba"))


def decode_audio(path: Path, rate: int) -> np.ndarray:
    """The audio track of ``path`` as mono float32 at ``rate`` Hz (ffmpeg from imageio-ffmpeg)."""
    import imageio_ffmpeg

    if not path.is_file():
        raise BadSampleError(path, "audio source file not found")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-vn", "-ac", "1"]
    cmd += ["-ar", str(rate), "-f", "f32le", "-"]
    done = subprocess.run(cmd, capture_output=True, check=False)
    if done.returncode != 0:
        raise BadSampleError(path, f"ffmpeg cannot decode audio: {done.stderr.decode()[-300:]}")
    audio = np.frombuffer(done.stdout, dtype="<f4")
    if not len(audio):
        raise BadSampleError(path, "no audio stream")
    if not np.isfinite(audio).all():
        raise BadSampleError(path, "decoded audio has non-finite samples")
    return audio


def video_fps(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS)) if cap.isOpened() else 0.0
    finally:
        cap.release()
    if not np.isfinite(fps) or fps <= 0:
        raise BadSampleError(path, f"no valid video frame rate ({fps}) to align the audio to")
    return fps


def window_logmel(
    audio: np.ndarray, fps: float, start_frame: int, n_frames: int, cfg: dict[str, Any]
) -> np.ndarray:
    """(n_mels, (context + n_frames) * mels_per_frame) log-mel of one window (see docstring)."""
    import librosa

    rate, per = int(cfg["sample_rate_hz"]), int(cfg["mels_per_frame"])
    hop = max(1, int(round(rate / (fps * per))))
    win = max(1, int(round(cfg["win_ms"] * rate / 1000)))
    n_fft = 1 << (win - 1).bit_length()
    n_cols = (int(cfg["context_frames"]) + n_frames) * per
    first = int(round((start_frame - int(cfg["context_frames"])) / fps * rate))
    # column c covers samples ending at first + (c + 1) * hop
    begin, end = first + hop - n_fft, first + n_cols * hop
    seg = np.zeros(end - begin, dtype=np.float32)
    lo, hi = max(begin, 0), min(end, len(audio))
    if hi > lo:
        seg[lo - begin : hi - begin] = audio[lo:hi]
    mel = librosa.feature.melspectrogram(
        y=seg,
        sr=rate,
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        window="hann",
        center=False,
        n_mels=int(cfg["n_mels"]),
        power=2.0,
    )[:, :n_cols]
    if mel.shape[1] < n_cols:
        mel = np.pad(mel, ((0, 0), (0, n_cols - mel.shape[1])))
    return (10.0 * np.log10(np.maximum(mel, 1e-10))).astype(np.float32)


def run(params: dict[str, Any], dataset: str) -> Path:
    cfg = params["extract_audio"]
    layout = layout_for(params, dataset)
    root = Path(dataset_params(params, dataset)["root"])
    index = pd.read_parquet(layout.index)
    needed = {"sample_id", "audio", "start_frame", "n_frames"} - set(index.columns)
    if needed:
        raise SystemExit(f"{layout.index}: no audio windows (missing columns {sorted(needed)})")
    qc = QcLog("extract_audio", params["index_dataset"]["on_bad_sample"])
    ids, mels, rates = [], [], set()
    for source, group in index.sort_values("sample_id").groupby("audio", sort=True):
        try:
            if not source:
                raise BadSampleError(root, "no audio source for this video")
            audio = decode_audio(root / source, int(cfg["sample_rate_hz"]))
            fps = video_fps(root / source)
        except BadSampleError as err:
            for sample_id in group["sample_id"]:
                qc.bad(sample_id, err)
            continue
        rates.add(round(fps, 3))
        for row in group.itertuples(index=False):
            ids.append(row.sample_id)
            mels.append(window_logmel(audio, fps, int(row.start_frame), int(row.n_frames), cfg))
    if not ids:
        raise SystemExit(f"{layout.index}: no usable audio window")
    order = np.argsort(ids)
    out = layout.physio_shard("audio")
    write_shard(
        out,
        [ids[i] for i in order],
        np.stack([mels[i] for i in order]),
        array_column="logmel",
        modality="audio",
        metadata={
            "sample_rate_hz": int(cfg["sample_rate_hz"]),
            "n_mels": int(cfg["n_mels"]),
            "mels_per_frame": int(cfg["mels_per_frame"]),
            "context_frames": int(cfg["context_frames"]),
            "win_ms": float(cfg["win_ms"]),
            "video_fps": sorted(rates),
            "units": "dB",
        },
    )
    qc.write(layout)
    print(f"[extract_audio] {dataset}: {len(ids)} windows -> {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    args = step_parser("Audio log-mel features aligned to video frames.").parse_args(argv)
    run(load_params(args.params), args.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
