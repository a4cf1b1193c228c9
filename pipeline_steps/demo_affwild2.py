"""Aff-Wild2-layout demo dataset (valence-arousal track), deterministic from a seed.

``generate_affwild2_demo(root, cfg)`` (``cfg`` = the ``make_demo_data`` section) writes::

    videos/<name>.mp4                          mp4v video + AAC audio track (muxed by ffmpeg)
    annotations/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<video>.txt

One video per demo person (``affwild2_people``, each ``affwild2_seconds`` long at ``fps``);
the last training video shows two people side by side and is annotated as ``<name>_left``
and ``<name>_right`` (one audio track, driven by the left speaker). The last quarter of the
videos (at least ``AFFWILD2_MIN_VALIDATION``) form Validation_Set.

Every video has smooth valence/arousal traces in [-1, 1] (sums of slow sinusoids through
tanh): what its person feels. They drive the voice-like audio strongly (pitch rises with
arousal and valence, loudness and syllable rate with arousal, brightness with valence) and the
face weakly (:func:`face_cue`): arousal the upper face (brows lower, eyes narrow), negative
valence the lower face (upper lip, nasolabial folds), each in short pulses whose height follows
the trace, scaled by ``face_effect`` and a per-person expressivity. The annotation depends on
``scenario`` (exact model in docs/demo.md): ``label`` (the negative control, the generator of
earlier versions byte for byte) writes the traces themselves; ``latent`` (default) writes what
a rater reports: the traces delayed by a per-video lag (``RATER_LAG_S``), plus a per-video bias
and slow rater noise (``RATER_BIAS_SD``, ``RATER_NOISE_SD``, ``RATER_SMOOTH_S``), clipped to
[-1, 1], so voice and face follow the felt state and the label only approximates it.
Each annotation file has a
run of -5 (unannotated) frames, and one file has one label line more than the video has
frames (the off-by-one that real files show).

Building blocks (subjects and faces, backgrounds, motion, lighting, sensor noise, the mp4
writer, the marker/atomic folder logic) come from :mod:`pipeline_steps.make_demo_data`.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np
import soundfile as sf

from pipeline_steps import make_demo_data as demo

AFFWILD2_MIN_VALIDATION = 2
AUDIO_RATE = 16000
UNANNOTATED_RUN = (10, 30)  # length range of the -5 run, frames
FACE_WEIGHT = 1.5
EXPRESSIVITY = (0.6, 1.0)  # range of the per-person gain of the facial cue
PULSE_HZ = (0.8, 1.6)  # rate of the expression pulses
HELD = 0.25  # share of the facial cue held between pulses
LOWER_GAIN = 2.0  # the lower face's action units move fewer pixels: weighted up to match
RATER_LAG_S = (0.4, 1.2)  # latent scenario: the rater's delay, uniform per video (seconds)
RATER_BIAS_SD = 0.1  # latent scenario: per-video, per-dimension rater offset
RATER_NOISE_SD = 0.15  # latent scenario: sd of the rater's slow noise, per dimension
RATER_SMOOTH_S = 0.5  # latent scenario: the rater noise is white noise averaged over this window


def _traces(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """(n, 2) smooth valence, arousal in [-1, 1]."""
    t = np.arange(n)[:, None] / fps
    freq = rng.uniform(0.03, 0.25, (3, 2))
    phase = rng.uniform(0, 2 * np.pi, (3, 2))
    amp = rng.uniform(0.4, 1.0, (3, 2))
    waves = (amp[:, None, :] * np.sin(2 * np.pi * freq[:, None, :] * t + phase[:, None, :])).sum(0)
    return np.tanh(waves + rng.normal(0, 0.3, 2)).astype(np.float32)


def voice(labels: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """A voice-like signal at AUDIO_RATE whose pitch, energy, rate and timbre follow labels."""
    n = int(round(len(labels) / fps * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    frame_t = np.arange(len(labels)) / fps
    valence = np.interp(t, frame_t, labels[:, 0])
    arousal = np.interp(t, frame_t, labels[:, 1])
    f0 = 140.0 + 50.0 * arousal + 25.0 * valence
    phase = 2 * np.pi * np.cumsum(f0) / AUDIO_RATE
    brightness = 0.55 + 0.25 * valence  # harmonic roll-off
    wave = sum(brightness**k * np.sin(k * phase) for k in range(1, 9))
    rate = 3.0 + 2.0 * (arousal + 1.0)  # syllables per second
    syllables = np.sin(np.pi * np.cumsum(rate) / AUDIO_RATE) ** 2
    energy = 0.08 + 0.12 * (arousal + 1.0)
    noise = rng.normal(0.0, 0.004, n)
    out = energy * syllables * wave / 3.0 + noise
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def face_cue(
    level: np.ndarray, fps: float, cfg: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Per-frame strength of one facial action for a label trace in [-1, 1].

    The action comes in short pulses (about one a second, as in conversation) on top of a
    held part: ``(1 + level) / 2 * (HELD + (1 - HELD) * pulse)``, times this person's
    expressivity (uniform in ``EXPRESSIVITY``), ``FACE_WEIGHT`` and ``face_effect``. The
    pulses' height follows the label, so a clip's change of expression carries it too.
    """
    t = np.arange(len(level)) / fps
    pulse = (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(*PULSE_HZ) * t + rng.uniform(0, 7))) ** 4
    gain = cfg["face_effect"] * FACE_WEIGHT * rng.uniform(*EXPRESSIVITY)
    return (gain * 0.5 * (1.0 + level) * (HELD + (1.0 - HELD) * pulse)).astype(np.float32)


def render(subjects: list, labels: list[np.ndarray], cfg: dict[str, Any], key: int) -> list:
    """BGR frames: one face per subject side by side, each with its own weak cue."""
    rng = demo._rng(cfg["seed"], 20, key)
    size, fps, n = cfg["frame_size"], cfg["fps"], len(labels[0])
    side = int(round(demo.FACE_SHARE * size))
    mask = demo.face_mask(side)
    panels = []
    for subject, lab in zip(subjects, labels, strict=True):
        panels.append(
            {
                "face": demo.face_patch(subject.face, side),
                "background": demo.make_background(subject, size),
                "upper": face_cue(lab[:, 1], fps, cfg, rng),
                "lower": LOWER_GAIN * face_cue(-lab[:, 0], fps, cfg, rng),
                "motion": demo._motion(rng, n, fps, amplitude=demo.HEAD_MOTION[0] * size / 192),
                "centre": size / 2 + np.array(subject.offset) * size - side / 2,
            }
        )
    gain = demo._lighting(rng, n, fps)
    noise = demo._SensorNoise(rng, size)
    frames = []
    for k in range(n):
        parts = []
        for p in panels:
            dx, dy, angle = p["motion"][k]
            warp = cv2.getRotationMatrix2D((side / 2, side / 2), float(angle), 1.0)
            warp[:, 2] += p["centre"] + (dx, dy)
            face = demo.expression_face(p["face"], float(p["upper"][k]), float(p["lower"][k]))
            face = face * mask
            shown = cv2.warpAffine(face, warp, (size, size))
            alpha = cv2.warpAffine(mask, warp, (size, size))
            frame = p["background"] * (1.0 - alpha) + shown
            frame = frame * gain[k] + noise.next()
            parts.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
        frames.append(cv2.cvtColor(np.hstack(parts), cv2.COLOR_GRAY2BGR))
    return frames


def mux(video: Path, audio: np.ndarray, out: Path) -> None:
    """Mux the silent mp4 with a 16 kHz wav into ``out`` (bit-exact flags: reproducible)."""
    wav = out.with_suffix(".wav")
    sf.write(wav, audio, AUDIO_RATE, subtype="PCM_16")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(video)]
    cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac"]
    cmd += ["-b:a", "64k", "-map_metadata", "-1", "-fflags", "+bitexact"]
    cmd += ["-flags:a", "+bitexact", "-flags:v", "+bitexact", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wav.unlink()
    video.unlink()
    if done.returncode != 0:
        raise demo.DemoDataError(f"{out}: ffmpeg could not mux the audio: {done.stderr[-500:]}")


def rated(felt: np.ndarray, fps: float, rng: np.random.Generator) -> np.ndarray:
    """What a rater reports for the felt (n, 2) traces: delayed by a lag uniform in
    ``RATER_LAG_S`` (the first frames hold the first value), plus a per-dimension bias
    normal(0, ``RATER_BIAS_SD``) and slow noise (white noise averaged over ``RATER_SMOOTH_S``,
    rescaled to sd ``RATER_NOISE_SD``), clipped to [-1, 1]."""
    n = len(felt)
    lag = int(round(rng.uniform(*RATER_LAG_S) * fps))
    delayed = felt[np.clip(np.arange(n) - lag, 0, n - 1)]
    width = max(1, int(round(RATER_SMOOTH_S * fps)))
    white = rng.normal(0.0, 1.0, (n + width - 1, 2))
    kernel = np.full(width, 1.0 / width)
    slow = np.column_stack([np.convolve(white[:, d], kernel, mode="valid") for d in range(2)])
    slow *= RATER_NOISE_SD * math.sqrt(width)  # averaging w unit normals leaves sd 1/sqrt(w)
    bias = rng.normal(0.0, RATER_BIAS_SD, 2)
    return np.clip(delayed + bias + slow, -1.0, 1.0).astype(np.float32)


def write_annotation(path: Path, labels: np.ndarray, rng: np.random.Generator, extra: int) -> None:
    lab = labels.copy()
    run = int(rng.integers(*UNANNOTATED_RUN))
    at = int(rng.integers(0, len(lab) - run))
    lab[at : at + run] = -5.0
    if extra:
        lab = np.vstack([lab, lab[-extra:]])
    lines = ["valence,arousal"] + [
        "-5,-5" if v == -5.0 else f"{v:.3f},{a:.3f}" for v, a in lab.tolist()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _write_affwild2(root: Path, cfg: dict[str, Any]) -> str:
    people = int(cfg["affwild2_people"])
    n_val = max(AFFWILD2_MIN_VALIDATION, people // 4)
    if people < n_val + 3:
        raise demo.DemoDataError(
            "make_demo_data.affwild2_people: at least 5 for the Aff-Wild2 demo"
        )
    subjects = demo.make_subjects({**cfg, "n_subjects": people})
    fps = cfg["fps"]
    n = int(round(float(cfg["affwild2_seconds"]) * fps))
    ann = root / "annotations" / "VA_Estimation_Challenge"
    n_train = len(subjects) - n_val
    pair = n_train - 2  # subjects pair and pair + 1 share the two-person video
    count, key = 0, 0
    i = 0
    while i < len(subjects):
        people = subjects[i : i + 2] if i == pair else [subjects[i]]
        rng = demo._rng(cfg["seed"], 21, i)
        labels = [_traces(rng, n, fps) for _ in people]
        name = f"{100 + i}-30-{cfg['frame_size']}x{cfg['frame_size']}"
        set_name = "Train_Set" if i < n_train else "Validation_Set"
        (root / "videos").mkdir(parents=True, exist_ok=True)
        silent = root / "videos" / f".{name}.silent.mp4"
        demo.write_video(silent, render(people, labels, cfg, key), fps)
        mux(silent, voice(labels[0], fps, rng), root / "videos" / f"{name}.mp4")
        names = [f"{name}_left", f"{name}_right"] if len(people) == 2 else [name]
        if demo.scenario(cfg) == "latent":  # own stream: the label scenario's draws unchanged
            rater = demo._rng(cfg["seed"], 22, i)
            labels = [rated(felt, fps, rater) for felt in labels]
        for video, lab in zip(names, labels, strict=True):
            write_annotation(ann / set_name / f"{video}.txt", lab, rng, extra=int(i == 0))
            count += 1
        i += len(people)
        key += 1
    return (
        f"scenario {demo.scenario(cfg)}, {len(subjects)} people in {key} videos of {n} frames "
        f"({cfg['frame_size']} px at {fps} fps), {count} annotation files, "
        f"{n_val} videos in Validation_Set"
    )


def generate_affwild2_demo(root: Path, cfg: dict[str, Any]) -> None:
    """Write (or keep, if up to date) the Aff-Wild2-layout demo at ``root``."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    demo._generate(Path(root), "affwild2", {**cfg, "affwild2_generator": digest}, _write_affwild2)
