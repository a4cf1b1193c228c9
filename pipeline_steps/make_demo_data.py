"""Write a small demo dataset in the on-disk layout of the real one (``datasets.<name>.root``).

BioVid Part A layout (``generate_biovid_demo``)::

    samples.csv                                   tab-separated index, one row per sample
    video/<subject_name>/<sample_name>.mp4        real LFW face, head motion, lighting noise
    biosignals_filtered/<subject_name>/<sample_name>_bio.csv
                                                  time (us), gsr, ecg, emg_trapezius,
                                                  emg_corrugator, emg_zygomaticus

Only BL1 (class 0) and PA4 (class 4) samples are written. ``scenario`` chooses what drives the
physiology and the face (the exact model is in docs/demo.md):

- ``latent`` (default): each clip has a latent pain response, a responder flag drawn with a
  probability that depends on the label (``RESPONDER_P``) and an intensity. The physiology
  (EDA level and SCRs, heart rate, trapezius EMG; scaled by ``physio_effect``) follows the
  intensity, not the label; the face shows a subtle grimace whose strength follows the
  intensity too, with per-clip noise (``LATENT_FACE``) and per-person expressivity (scaled by
  ``face_effect``). The label is a noisy proxy of what the clip's person felt.
- ``label`` (the negative control, the generator of earlier versions byte for byte): the label
  drives the physiology; the face grimaces with a label-dependent probability (``GRIMACE_P``)
  drawn independently of the physiology, so given the label the physiology says nothing about
  the face.

Either way a face-only model can learn the cue but stays below the physiology. Subjects
differ in face, background and physiological baselines. Every sample draws from its own seeds
(``seed``, stream, sample index), so the output is byte-identical for the same
``make_demo_data`` section.

Frame count: ``floor(duration_s * fps + 0.5)``, i.e. 5.5 s at 25 fps -> 138 frames (137.5 rounded
half up: the clip covers the whole 5.5 s); biosignal rows: ``floor(duration_s * sampling_rate_hz +
0.5)`` (5.5 s at 512 Hz -> 2816).

The folder is written atomically and carries a marker (``.mtpkdot_demo.json``, the settings it
was made from): an up-to-date folder is kept, an outdated demo folder is regenerated, and a
non-empty folder without the marker (possibly real data) is never touched. The marker also holds
a digest of this module's source, so editing the generator regenerates the demo.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import neurokit2 as nk
import numpy as np
from skimage import data as skdata

from pipeline_steps.atomic import atomic_path, write_json
from pipeline_steps.config import (
    ParamsError,
    dataset_params,
    demo_settings,
    load_params,
    step_parser,
)

MARKER = ".mtpkdot_demo.json"
BIOVID_CLASSES = {"BL1": 0, "PA4": 4}
BIO_COLUMNS = ("gsr", "ecg", "emg_trapezius", "emg_corrugator", "emg_zygomaticus")
SAMPLES_HEADER = "subject_id\tsubject_name\tclass_id\tclass_name\tsample_id\tsample_name"
N_LFW_FACES = 100  # the first 100 images of skimage's lfw_subset are faces of different people

# Face geometry, as shares of the face patch (LFW crops: brows ~0.30, eyes ~0.40 down).
FACE_SHARE = 0.6  # face patch side / frame side
BROW_ROW, EYE_ROW, CHEEK_ROW, LIP_ROW = 0.28, 0.40, 0.50, 0.70
BROW_SHIFT = 0.06  # brow lowering at strength 1, share of the face side
CHEEK_SHIFT = 0.03  # cheek / lower-lid raising at strength 1
LIP_SHIFT = 0.015  # upper-lip raising at strength 1
BAND_DARKEN = 0.35  # darkening of the brow-eye band at strength 1
FURROW_DARKEN = 0.45  # vertical furrow between the brows at strength 1
FOLD_DARKEN = 0.45  # nasolabial folds at strength 1
FOLD_ROWS, FOLD_SPREAD = (0.55, 0.76), (0.10, 0.19)  # fold rows, distance from the midline
RAMP_S = (0.4, 0.7)  # the grimace ramps in between these shares of the clip
GRIMACE_P = (0.1, 0.8)  # chance that a baseline / pain sample shows the grimace
HEAD_MOTION = (1.0, 0.7)  # head motion amplitude: shift (px at 192 px frames), rotation (deg)
SCENARIOS = ("latent", "label")
RESPONDER_P = (0.15, 0.8)  # latent scenario: chance that a BL1 / PA4 clip holds a pain response
INTENSITY = (1.0, 0.3, 0.3, 1.8)  # responders' intensity: normal mean, sd, clipped to [lo, hi]
LATENT_FACE = (0.6, 0.1)  # latent scenario: grimace = gain * intensity + normal(0, sd), >= 0


class DemoDataError(RuntimeError):
    """The demo dataset cannot be written (settings, or a folder that is not ours)."""


@dataclass(frozen=True)
class Subject:
    """Per-subject identity and baselines (drawn once from the seed)."""

    index: int
    name: str
    face: int  # index into lfw_subset
    background: tuple[float, float, int]  # grey level, gradient, texture seed
    offset: tuple[float, float]  # face centre shift, share of the frame
    eda_level: float  # uS
    scr_gain: float
    heart_rate: float  # bpm
    ecg_gain: float
    emg_gain: float
    expressiveness: float  # multiplies the facial cue


@dataclass(frozen=True)
class Sample:
    """One row of samples.csv and what its files are made from."""

    subject: Subject
    class_name: str
    number: int  # per-subject recording order, as in ``<subject>-PA4-006``
    sample_id: int

    @property
    def name(self) -> str:
        return f"{self.subject.name}-{self.class_name}-{self.number:03d}"

    @property
    def pain(self) -> float:
        return 1.0 if self.class_name == "PA4" else 0.0


@dataclass(frozen=True)
class Response:
    """A clip's latent pain response (``scenario: latent``), drawn from its own stream."""

    responder: bool
    intensity: float  # 0 for non-responders, else normal(INTENSITY) clipped
    face: float  # grimace draw before expressivity and face_effect


def scenario(cfg: dict[str, Any]) -> str:
    """The ``make_demo_data.scenario`` (``latent`` when the section predates the key)."""
    name = cfg.get("scenario", "latent")
    if name not in SCENARIOS:
        raise DemoDataError(f"make_demo_data.scenario is '{name}': one of {', '.join(SCENARIOS)}")
    return name


def latent_response(sample: Sample, cfg: dict[str, Any]) -> Response:
    """The clip's latent response: responder with probability ``RESPONDER_P[label]``, an
    intensity (responders only) and the subtle grimace it shows (noisy, follows intensity).

    All three draws are made for every clip (stream 4, sample index), so each is stable."""
    rng = _rng(cfg["seed"], 4, sample.sample_id)
    responder = bool(rng.random() < RESPONDER_P[int(sample.pain)])
    mean, sd, lo, hi = INTENSITY
    intensity = float(np.clip(rng.normal(mean, sd), lo, hi)) if responder else 0.0
    gain, noise = LATENT_FACE
    face = max(0.0, gain * intensity + float(rng.normal(0.0, noise)))
    return Response(responder, intensity, face)


def physio_drive(sample: Sample, cfg: dict[str, Any]) -> float:
    """What the physiology responds to, times ``physio_effect``: the label (``label``
    scenario: 0 or 1) or the latent intensity (``latent``)."""
    if scenario(cfg) == "label":
        return cfg["physio_effect"] * sample.pain
    return cfg["physio_effect"] * latent_response(sample, cfg).intensity


def n_frames(cfg: dict[str, Any]) -> int:
    """Video frames per clip: duration x fps, halves rounded up (5.5 s x 25 -> 138)."""
    return int(math.floor(cfg["duration_s"] * cfg["fps"] + 0.5))


def n_rows(cfg: dict[str, Any]) -> int:
    """Biosignal rows per clip (5.5 s x 512 Hz -> 2816)."""
    return int(math.floor(cfg["duration_s"] * cfg["sampling_rate_hz"] + 0.5))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _subject_name(rng: np.random.Generator, taken: set[str]) -> str:
    """A unique BioVid-like name ``MMDDYY_<m|w>_<age>``, e.g. ``071309_w_21``."""
    while True:
        month, day, year = rng.integers(1, 13), rng.integers(1, 29), rng.integers(9, 11)
        name = f"{month:02d}{day:02d}{year:02d}_{rng.choice(['m', 'w'])}_{rng.integers(18, 66)}"
        if name not in taken:
            taken.add(name)
            return name


def make_subjects(cfg: dict[str, Any]) -> list[Subject]:
    """Draw the subjects: names, faces (distinct people) and baselines."""
    if cfg["n_subjects"] > N_LFW_FACES:
        raise DemoDataError(f"make_demo_data.n_subjects: at most {N_LFW_FACES} (LFW identities)")
    rng = _rng(cfg["seed"], 0)
    faces = rng.permutation(N_LFW_FACES)[: cfg["n_subjects"]]
    taken: set[str] = set()
    subjects = []
    for i, face in enumerate(faces):
        subjects.append(
            Subject(
                index=i,
                name=_subject_name(rng, taken),
                face=int(face),
                background=(
                    float(rng.uniform(60, 190)),
                    float(rng.uniform(-30, 30)),
                    int(rng.integers(2**31)),
                ),
                offset=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03))),
                eda_level=max(0.8, float(rng.normal(3.0, 0.6))),
                scr_gain=float(rng.lognormal(0.0, 0.25)),
                heart_rate=float(rng.normal(72.0, 5.0)),
                ecg_gain=float(rng.uniform(0.8, 1.2)),
                emg_gain=float(rng.lognormal(0.0, 0.25)),
                expressiveness=float(rng.uniform(0.7, 1.3)),
            )
        )
    return subjects


def plan_samples(subjects: list[Subject], cfg: dict[str, Any]) -> list[Sample]:
    """Per subject, ``samples_per_class`` BL1 and PA4 samples in a shuffled recording order."""
    rng = _rng(cfg["seed"], 1)
    samples = []
    for subject in subjects:
        order = rng.permutation(list(BIOVID_CLASSES) * cfg["samples_per_class"])
        rows = [(str(c), k + 1) for k, c in enumerate(order)]
        rows.sort(key=lambda r: (BIOVID_CLASSES[r[0]], r[1]))
        for class_name, number in rows:
            samples.append(Sample(subject, class_name, number, len(samples)))
    return samples


def samples_csv(samples: list[Sample]) -> str:
    """The tab-separated samples.csv text."""
    lines = [SAMPLES_HEADER]
    for s in samples:
        cid = BIOVID_CLASSES[s.class_name]
        lines.append(
            f"{s.subject.index}\t{s.subject.name}\t{cid}\t{s.class_name}\t{s.sample_id}\t{s.name}"
        )
    return "\n".join(lines) + "\n"


# --- physiology -------------------------------------------------------------------------------


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Cut or edge-pad to ``n`` samples (eda_simulate sometimes returns one extra)."""
    x = np.asarray(x, dtype=np.float64)[:n]
    return np.pad(x, (0, n - len(x)), mode="edge") if len(x) < n else x


def simulate_eda(sample: Sample, cfg: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Skin conductance (uS): tonic level plus SCRs; the pain response raises both."""
    n, effect = n_rows(cfg), physio_drive(sample, cfg)
    n_scr = int(min(3, rng.poisson(0.3 + 1.5 * effect)))
    phasic = nk.eda_simulate(
        duration=cfg["duration_s"],
        length=n,
        sampling_rate=cfg["sampling_rate_hz"],
        noise=0.0,
        scr_number=n_scr,
        drift=0.0,
        random_state=int(rng.integers(2**31)),
    )
    level = sample.subject.eda_level + 1.5 * effect + rng.normal(0.0, 0.25)
    amplitude = sample.subject.scr_gain * (0.3 + 0.7 * effect)
    drift = rng.normal(0.0, 0.03) * np.linspace(0.0, cfg["duration_s"], n)
    noise = rng.normal(0.0, 0.005, n)
    return level + amplitude * (_fit(phasic, n) - 1.0) + drift + noise


def simulate_ecg(sample: Sample, cfg: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """ECG (mV) at the subject's heart rate, +15 bpm at a full pain response."""
    rate = sample.subject.heart_rate + 15.0 * physio_drive(sample, cfg)
    rate += rng.normal(0.0, 2.5)
    ecg = nk.ecg_simulate(
        duration=cfg["duration_s"],
        length=n_rows(cfg),
        sampling_rate=cfg["sampling_rate_hz"],
        noise=0.02,
        heart_rate=float(np.clip(rate, 45.0, 150.0)),
        heart_rate_std=1.0,
        method="ecgsyn",
        random_state=int(rng.integers(2**31)),
    )
    return sample.subject.ecg_gain * _fit(ecg, n_rows(cfg))


def simulate_emg(sample: Sample, cfg: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Trapezius EMG (mV): more, larger bursts and higher tone with the pain response."""
    effect = physio_drive(sample, cfg)
    n_bursts = int(min(3, rng.poisson(0.25 + 2.0 * effect)))
    burst_s = min(float(rng.uniform(0.4, 0.8)), cfg["duration_s"] / (n_bursts + 1))
    emg = nk.emg_simulate(
        duration=cfg["duration_s"],
        length=n_rows(cfg),
        sampling_rate=cfg["sampling_rate_hz"],
        noise=0.01,
        burst_number=n_bursts,
        burst_duration=burst_s,
        random_state=int(rng.integers(2**31)),
    )
    emg = _fit(emg, n_rows(cfg))
    return 0.05 * sample.subject.emg_gain * (1.0 + 0.8 * effect) * (emg - emg.mean())


def simulate_biosignals(sample: Sample, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """All biosignal columns of one sample, from the sample's own seed."""
    rng = _rng(cfg["seed"], 2, sample.sample_id)
    n = n_rows(cfg)
    return {
        "gsr": simulate_eda(sample, cfg, rng),
        "ecg": simulate_ecg(sample, cfg, rng),
        "emg_trapezius": simulate_emg(sample, cfg, rng),
        "emg_corrugator": rng.normal(0.0, 0.002, n),
        "emg_zygomaticus": rng.normal(0.0, 0.002, n),
    }


def write_biosignals(path: Path, signals: dict[str, np.ndarray], sampling_rate_hz: int) -> None:
    """Tab-separated ``time`` (integer microseconds from 0) and the signal columns."""
    n = len(signals["gsr"])
    time_us = np.round(np.arange(n) * 1e6 / sampling_rate_hz).astype(np.int64)
    table = np.column_stack([time_us, *(signals[c] for c in BIO_COLUMNS)])
    header = "\t".join(("time", *BIO_COLUMNS))
    fmt = ["%d"] + ["%.6f"] * len(BIO_COLUMNS)
    np.savetxt(path, table, fmt=fmt, delimiter="\t", header=header, comments="")


# --- video ------------------------------------------------------------------------------------


def _smooth_field(size: int, seed: int, grid: int = 5) -> np.ndarray:
    """A smooth random field in about [-1, 1] (coarse noise, bicubic upscaling)."""
    coarse = np.random.default_rng(seed).normal(0.0, 0.5, (grid, grid)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def make_background(subject: Subject, size: int) -> np.ndarray:
    """Plain wall with a vertical light gradient and a soft texture (float32 grey)."""
    level, gradient, seed = subject.background
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32)[:, None]
    return level + gradient * ramp + 12.0 * _smooth_field(size, seed)


@lru_cache(maxsize=1)
def _lfw_faces() -> np.ndarray:
    """skimage's LFW subset (ships in the wheel, no download): (200, 25, 25) floats in [0, 1]."""
    return skdata.lfw_subset()


def face_patch(face: int, side: int) -> np.ndarray:
    """LFW face ``face`` upscaled to ``side`` px (bicubic), float32 grey 0-255."""
    img = _lfw_faces()[face].astype(np.float32) * 255.0
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_CUBIC)


def face_mask(side: int) -> np.ndarray:
    """Feathered rounded square (superellipse): keeps the whole LFW crop, soft corners/edges."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side - 0.5
    r = (np.abs(xx / 0.5) ** 4 + np.abs(yy / 0.5) ** 4) ** 0.25
    return np.clip((1.0 - r) / 0.15, 0.0, 1.0).astype(np.float32)


def _bump(u: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Gaussian bump exp(-((u - centre) / width)^2)."""
    return np.exp(-(((u - centre) / width) ** 2))


def _fold_lines(side: int) -> np.ndarray:
    """The two nasolabial folds (nose wings to mouth corners) as soft lines, peak 1."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float32) / side
    (y0, y1), (dx0, dx1) = FOLD_ROWS, FOLD_SPREAD
    along = np.clip((y - y0) / (y1 - y0), 0.0, 1.0)
    centre = dx0 + (dx1 - dx0) * along  # distance of the fold from the midline
    inside = _bump(y, 0.5 * (y0 + y1), 0.6 * (y1 - y0))
    return _bump(np.abs(x - 0.5), centre, 0.025) * inside


def expression_face(face: np.ndarray, upper: float, lower: float) -> np.ndarray:
    """Facial action units of the upper and of the lower face, each at its own strength.

    ``upper``: the brows lower (AU4) and the cheeks and lower lids rise (AU6/7), which narrows
    the eyes; the brow-eye band darkens and a vertical furrow appears between the brows.
    ``lower``: the upper lip rises a little (AU10) and the nasolabial folds deepen (AU9/10).
    Geometry is a smooth vertical displacement of the rows, limited to the face's central
    width. Nothing moves or changes above the brows' upper edge, below the mouth or outside
    the face's central width. Strengths <= 0 leave their part of the face neutral.
    """
    upper, lower = max(0.0, upper), max(0.0, lower)
    if upper == 0.0 and lower == 0.0:
        return face
    side = face.shape[0]
    y = np.arange(side, dtype=np.float32) / side
    x = np.arange(side, dtype=np.float32) / side
    across = _bump(x, 0.5, 0.28)[None, :]
    down = upper * (BROW_SHIFT * _bump(y, BROW_ROW, 0.07) - CHEEK_SHIFT * _bump(y, CHEEK_ROW, 0.05))
    down -= lower * LIP_SHIFT * _bump(y, LIP_ROW, 0.04)
    map_y = (y[:, None] * side - side * down[:, None] * across).astype(np.float32)
    map_x = np.broadcast_to(np.arange(side, dtype=np.float32)[None, :], (side, side)).copy()
    moved = cv2.remap(face, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shade = BAND_DARKEN * _bump(y, 0.5 * (BROW_ROW + EYE_ROW), 0.06)[:, None] * across
    shade = shade + FURROW_DARKEN * _bump(y, BROW_ROW, 0.06)[:, None] * _bump(x, 0.5, 0.035)
    shade = upper * shade + lower * FOLD_DARKEN * _fold_lines(side)
    return moved * (1.0 - np.clip(shade, 0.0, 0.8))


def pain_face(face: np.ndarray, strength: float) -> np.ndarray:
    """A grimace (PSPI-like action units): :func:`expression_face` with both parts at
    ``strength``."""
    return expression_face(face, strength, strength)


def _ramp(t: np.ndarray, duration_s: float) -> np.ndarray:
    """0 before, 1 after the cue's onset window, smoothstep in between."""
    a, b = RAMP_S[0] * duration_s, RAMP_S[1] * duration_s
    u = np.clip((t - a) / (b - a), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def cue_strength(sample: Sample, cfg: dict[str, Any], rng: np.random.Generator) -> float:
    """Peak strength of the facial cue, times the subject's expressiveness and ``face_effect``.

    ``label`` scenario: a sample grimaces with probability ``GRIMACE_P[pain]`` (strength about
    1, sd 0.25; drawn from ``rng``, the clip's video stream), else its face stays near neutral
    (about 0, sd 0.1); some pain samples show nothing and some baseline samples grimace,
    independently of their physiology. ``latent`` scenario: the latent response's subtle
    grimace (:func:`latent_response`; ``rng`` is not used).
    """
    if scenario(cfg) == "latent":
        draw = latent_response(sample, cfg).face
    else:
        grimaces = rng.random() < GRIMACE_P[int(sample.pain)]
        draw = max(0.0, float(rng.normal(1.0, 0.25) if grimaces else rng.normal(0.0, 0.1)))
    return cfg["face_effect"] * sample.subject.expressiveness * draw


def _motion(rng: np.random.Generator, n: int, fps: float, amplitude: float) -> np.ndarray:
    """Smooth head motion: (n, 3) of dx, dy (px) and in-plane rotation (degrees)."""
    t = np.arange(n)[:, None] / fps
    freq = rng.uniform(0.15, 0.8, (2, 3))
    phase = rng.uniform(0.0, 2.0 * np.pi, (2, 3))
    waves = np.sin(2.0 * np.pi * freq[0] * t + phase[0]) + 0.5 * np.sin(
        2.0 * np.pi * freq[1] * t + phase[1]
    )
    return waves / 1.5 * np.array([amplitude, amplitude, HEAD_MOTION[1]])


def _lighting(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Per-frame brightness gain: a per-clip offset and a slow flicker (a percent or two)."""
    t = np.arange(n) / fps
    flicker = np.sin(2.0 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0.0, 2.0 * np.pi))
    return (1.0 + rng.normal(0.0, 0.02) + 0.01 * flicker).astype(np.float32)


class _SensorNoise:
    """Grey-level sensor noise (sd 1.5): random windows of a small bank of noise fields."""

    MARGIN, BANK = 16, 4

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng, self.size = rng, size
        shape = (self.BANK, size + self.MARGIN, size + self.MARGIN)
        self.bank = 1.5 * rng.standard_normal(shape, dtype=np.float32)

    def next(self) -> np.ndarray:
        k, y, x = self.rng.integers((self.BANK, self.MARGIN, self.MARGIN))
        return self.bank[k, y : y + self.size, x : x + self.size]


def render_frames(sample: Sample, cfg: dict[str, Any]) -> list[np.ndarray]:
    """The clip's BGR uint8 frames (grey face on the subject's background)."""
    rng = _rng(cfg["seed"], 3, sample.sample_id)
    size, fps, frames = cfg["frame_size"], cfg["fps"], n_frames(cfg)
    side = int(round(FACE_SHARE * size))
    face, mask = face_patch(sample.subject.face, side), face_mask(side)
    background = make_background(sample.subject, size)
    strength = cue_strength(sample, cfg, rng) * _ramp(np.arange(frames) / fps, cfg["duration_s"])
    motion = _motion(rng, frames, fps, amplitude=HEAD_MOTION[0] * size / 192)
    gain = _lighting(rng, frames, fps)
    noise = _SensorNoise(rng, size)
    centre = size / 2 + np.array(sample.subject.offset) * size - side / 2
    out = []
    for k in range(frames):
        dx, dy, angle = motion[k]
        warp = cv2.getRotationMatrix2D((side / 2, side / 2), float(angle), 1.0)
        warp[:, 2] += centre + (dx, dy)
        # two one-channel warps: OpenCV's two-channel float path is ~10x slower
        shown = cv2.warpAffine(pain_face(face, float(strength[k])) * mask, warp, (size, size))
        alpha = cv2.warpAffine(mask, warp, (size, size))
        frame = background * (1.0 - alpha) + shown
        frame *= gain[k]
        frame += noise.next()
        np.clip(np.rint(frame, out=frame), 0, 255, out=frame)
        out.append(cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_GRAY2BGR))
    return out


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """mp4 (fourcc mp4v) with OpenCV's writer; its output is byte-stable for equal frames."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise DemoDataError(f"{path}: OpenCV cannot open an mp4v video writer")
    try:
        for frame in frames:
            writer.write(frame)
    finally:
        writer.release()


# --- assembling -------------------------------------------------------------------------------


def write_biovid_sample(root: Path, sample: Sample, cfg: dict[str, Any]) -> None:
    """Write one sample's video and biosignal file under ``root``."""
    subject = sample.subject.name
    video = root / "video" / subject / f"{sample.name}.mp4"
    bio = root / "biosignals_filtered" / subject / f"{sample.name}_bio.csv"
    video.parent.mkdir(parents=True, exist_ok=True)
    bio.parent.mkdir(parents=True, exist_ok=True)
    write_video(video, render_frames(sample, cfg), cfg["fps"])
    write_biosignals(bio, simulate_biosignals(sample, cfg), cfg["sampling_rate_hz"])


def _write_biovid(root: Path, cfg: dict[str, Any]) -> str:
    """Fill an empty folder with the BioVid-layout demo; return what it wrote, in words."""
    samples = plan_samples(make_subjects(cfg), cfg)
    (root / "samples.csv").write_text(samples_csv(samples))
    for sample in samples:  # serial: worker processes did not pay off on 2 cores
        write_biovid_sample(root, sample, cfg)
    return (
        f"scenario {scenario(cfg)}, {cfg['n_subjects']} subjects, {len(samples)} samples, "
        f"{n_frames(cfg)} frames of {cfg['frame_size']} px at {cfg['fps']} fps, "
        f"{n_rows(cfg)} biosignal rows at {cfg['sampling_rate_hz']} Hz"
    )


def _marker(layout: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """What the folder was made from: layout, settings and this module's source digest."""
    source = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return {"layout": layout, "generator": source, "make_demo_data": cfg}


def _read_marker(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _check_replaceable(root: Path) -> None:
    """Refuse to replace anything that is not a demo folder written by this module."""
    if root.exists() and not root.is_dir():
        raise DemoDataError(f"{root}: exists and is not a folder; not replacing it")
    if root.is_dir() and any(root.iterdir()) and _read_marker(root) is None:
        raise DemoDataError(
            f"{root}: exists without a demo marker ({MARKER}); it may hold real data, so it is "
            "left untouched. Set datasets.<name>.demo: false to use it, or point root elsewhere."
        )


def _generate(
    root: Path,
    layout: str,
    cfg: dict[str, Any],
    writer: Callable[[Path, dict[str, Any]], str],
) -> None:
    """Shared marker / refusal / atomic-write logic of every layout (``writer`` fills the
    folder and says what it wrote)."""
    root, started = Path(root), time.perf_counter()
    scenario(cfg)  # an unknown scenario is refused before anything is written
    marker = _marker(layout, cfg)
    if _read_marker(root) == marker:
        print(f"make_demo_data: {root} is up to date ({layout}, seed {cfg['seed']})")
        return
    _check_replaceable(root)
    with atomic_path(root, is_dir=True) as tmp:
        summary = writer(tmp, cfg)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    print(
        f"make_demo_data: wrote {root} ({layout}): {summary}, seed {cfg['seed']}, "
        f"{time.perf_counter() - started:.1f} s"
    )


def generate_biovid_demo(root: Path, cfg: dict[str, Any]) -> None:
    """Write (or keep, if up to date) a BioVid Part A-layout demo dataset at ``root``.

    ``cfg`` is the validated ``make_demo_data`` section. Raises ``DemoDataError`` when ``root``
    is a non-empty folder without the demo marker.
    """
    _generate(root, "biovid", cfg, _write_biovid)


def _affwild2(root: Path, cfg: dict[str, Any]) -> None:
    """The Aff-Wild2-layout demo (imported late: that module builds on this one)."""
    from pipeline_steps.demo_affwild2 import generate_affwild2_demo

    generate_affwild2_demo(root, cfg)


GENERATORS: dict[str, Callable[..., None]] = {
    "biovid": generate_biovid_demo,
    "affwild2": _affwild2,
}


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m pipeline_steps.make_demo_data --params params.yaml --dataset biovid``."""
    parser = step_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--manifest", help="also write this JSON (root, layout, settings) once the data exist"
    )
    args = parser.parse_args(argv)
    params = load_params(args.params)
    dataset = dataset_params(params, args.dataset)
    layout = dataset["layout"]
    if layout not in GENERATORS:
        raise DemoDataError(
            f"datasets.{args.dataset}.layout is '{layout}': no demo generator for it "
            f"(available: {', '.join(GENERATORS)})"
        )
    GENERATORS[layout](Path(dataset["root"]), demo_settings(params, args.dataset))
    if args.manifest:
        write_json(
            args.manifest,
            {
                "root": dataset["root"],
                "layout": layout,
                "settings": _read_marker(Path(dataset["root"])),
            },
        )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DemoDataError, ParamsError) as err:
        print(f"make_demo_data: error: {err}", file=sys.stderr)
        sys.exit(1)
