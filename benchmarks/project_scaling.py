"""Project BioVid Part A and Aff-Wild2 runs from bench_units' measured per-unit CPU costs.

    python benchmarks/project_scaling.py UNITS_JSON [--gpu-speedup-small 10]
        [--gpu-speedup-r3d 100] [--nodes 1 4 16] [--gpus-per-node 4] [--cores-per-node 32]
        [--shards 64] [--startup-s 4] [--seeds 1]

Prints the markdown tables of docs/scaling.md (the formulas are there). Job counts come from
the real DAG (``pipeline_steps.job_matrix`` on params.yaml with the corpus' folds); epochs,
methods and ``align_teacher_pool.cross_fit`` from params.yaml. Every training epoch costs its
measured core-seconds per 1000 training clips; a GPU job is assumed ``--gpu-speedup-*`` times
faster than one core (NOT measured: an assumption to replace with a GPU measurement).
"""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline_steps.config import REPO_ROOT, load_params
from pipeline_steps.job_matrix import job_matrix

FEATURE_STAGES = ("crop_faces", "extract_physio", "extract_audio")
TEACHER = "train_modality_teacher"  # one row per modality: "train_modality_teacher:<m>"
R3D_FACTOR_KEY = "teacher_video_r3d_18"


@dataclass(frozen=True)
class Corpus:
    """One projected run: sizes of the data and the fold split (shares of the clips)."""

    name: str
    dataset: str  # bench_units' dataset whose measures apply
    clips: float  # samples (clips or windows)
    folds: int
    train: float  # share of the clips in a fold's training split
    val: float
    test: float
    backbone: str = "small"  # video teacher/student encoder

    def fold_counts(self) -> tuple[float, float, float]:
        return self.clips * self.train, self.clips * self.val, self.clips * self.test


def biovid(name: str, per_subject: int, folds: int, backbone: str = "small") -> Corpus:
    """BioVid Part A: 87 subjects, ``per_subject`` clips; 2 validation subjects per fold."""
    test = 1 if folds == 87 else 87 / folds
    return Corpus(
        name,
        "biovid",
        87 * per_subject,
        folds,
        (87 - test - 2) / 87,
        2 / 87,
        test / 87,
        backbone,
    )


def affwild2(name: str, backbone: str = "small") -> Corpus:
    """Aff-Wild2: 2.8 M annotated frames in ~560 videos, windows of 32 frames (one extra final
    window per video); Validation_Set (test) assumed 15% of the windows, val_fraction 0.2."""
    windows = 2.8e6 / 32 + 560
    return Corpus(name, "affwild2", windows, 4, 0.85 * 0.8, 0.85 * 0.2, 0.15, backbone)


CORPORA = [
    biovid("BioVid A, BL1 vs PA4, 4 folds", 40, 4),
    biovid("BioVid A, 5 classes, 4 folds", 100, 4),
    biovid("BioVid A, BL1 vs PA4, LOSO", 40, 87),
    biovid("BioVid A, BL1 vs PA4, 4 folds, r3d_18", 40, 4, "r3d_18"),
    affwild2("Aff-Wild2, 4 folds"),
    affwild2("Aff-Wild2, 4 folds, r3d_18", "r3d_18"),
]


class Projection:
    """Per-job core-seconds (CPU) and GPU seconds of one corpus."""

    def __init__(self, corpus: Corpus, units: dict[str, Any], args: argparse.Namespace) -> None:
        self.c = corpus
        self.m = {row["key"]: row["value"] for row in units["measures"]}
        self.storage_units = units["storage"]
        self.args = args
        params = copy.deepcopy(load_params(REPO_ROOT / "params.yaml"))
        params["run"]["datasets"] = [corpus.dataset]
        params["datasets"][corpus.dataset]["demo"] = True  # job counts only: no file lookups
        params["index_dataset"].update(n_folds=corpus.folds, loso=False)
        params["crop_faces"]["n_shards"] = args.shards
        self.params = params
        self.jobs = {stage: len(j) for stage, j in job_matrix(params).items() if j}
        self.modalities = params["datasets"][corpus.dataset]["modalities"]
        self.methods = params["train_student"]["methods"]
        crop = params["crop_faces"]
        ds = params["datasets"][corpus.dataset]
        window = ds["window_frames"] if ds["layout"] == "affwild2" else None
        self.frames_per_clip = int(window or crop["n_frames"])  # crops stored per sample
        self.crop_bytes = self.frames_per_clip * crop["size"] ** 2 * 3  # uint8 RGB

    def epoch(self, key: str) -> float:
        """Core-seconds of one epoch on the fold's training clips (validation included)."""
        n_train = self.c.fold_counts()[0]
        return self.m[key] * n_train / 1000

    def video_factor(self) -> float:
        """r3d_18 / small CNN cost of a video epoch (measured at T=8; same ratio assumed at
        Aff-Wild2's T=32)."""
        if self.c.backbone == "small":
            return 1.0
        return self.m[R3D_FACTOR_KEY] / self.m["teacher_biovid_video"]

    def teacher_epochs(self, m: str) -> float:
        cost = self.epoch(f"teacher_{self.c.dataset}_{m}")
        return cost * (self.video_factor() if m == "video" else 1.0)

    def chain(self) -> float:
        """One full training of every teacher, the fusion teacher and the pool (core-s)."""
        p = self.params
        teachers = sum(self.teacher_epochs(m) for m in self.modalities)
        return (
            p["train_modality_teacher"]["epochs"] * teachers
            + p["train_fusion_teacher"]["epochs"] * self.epoch(f"fusion_{self.c.dataset}")
            + p["align_teacher_pool"]["epochs"] * self.epoch(f"pool_{self.c.dataset}")
        )

    def stage_core_s(self) -> dict[str, tuple[int, float, bool]]:
        """Stage -> (jobs, mean core-seconds per job, runs on a GPU)."""
        p, d, h = self.params, self.c.dataset, self.args.startup_s
        n_train, _, n_test = self.c.fold_counts()
        k = p["align_teacher_pool"]["cross_fit"]
        crop = (
            self.c.clips / self.m["crop_biovid_real_clips"]
            if d == "biovid"
            else (self.c.clips * self.frames_per_clip / self.m["crop_window_real_frames"])
        )
        out: dict[str, tuple[int, float, bool]] = {
            "crop_faces": (self.jobs["crop_faces"], h + crop / self.jobs["crop_faces"], False)
        }
        if "extract_physio" in self.jobs:
            per = sum(self.c.clips / self.m[f"physio_{m}"] for m in ("eda", "ecg", "emg")) / 3
            out["extract_physio"] = (self.jobs["extract_physio"], h + per, False)
        if "extract_audio" in self.jobs:
            out["extract_audio"] = (1, h + self.c.clips / self.m["audio_logmel"], False)
        e = {s: p[s]["epochs"] for s in ("train_modality_teacher", "train_fusion_teacher")}
        per_modality = self.jobs["train_modality_teacher"] // len(self.modalities)
        for m in self.modalities:
            out[f"{TEACHER}:{m}"] = (
                per_modality,
                h + e["train_modality_teacher"] * self.teacher_epochs(m),
                True,
            )
        out["train_fusion_teacher"] = (
            self.jobs["train_fusion_teacher"],
            h + e["train_fusion_teacher"] * self.epoch(f"fusion_{d}"),
            True,
        )
        pool = p["align_teacher_pool"]["epochs"] * self.epoch(f"pool_{d}")
        cross = k * self.chain() * (k - 1) / k if k else 0.0
        out["align_teacher_pool"] = (self.jobs["align_teacher_pool"], h + pool + cross, True)
        out["evaluate_teachers"] = (self.jobs["evaluate_teachers"], h, False)
        student = sum(
            self.epoch(f"student_{d}_{'visual_only' if m == 'visual_only' else 'mtpkdot'}")
            for m in self.methods
        ) / len(self.methods)
        out["train_student"] = (
            self.jobs["train_student"],
            h + p["train_student"]["epochs"] * student * self.video_factor(),
            True,
        )
        evaluate = self.m[f"evaluate_{d}_visual_only"] * n_test / 1000 * self.video_factor()
        out["evaluate"] = (self.jobs["evaluate"], h + evaluate, True)
        out["report"] = (self.jobs["report"], h, False)
        return out

    def speedup(self, stage: str) -> float:
        """The assumed GPU speed-up of a stage: r3d_18's where the r3d_18 video encoder is
        most of the work (video teacher, align with its cross-fitted video teachers, student,
        evaluate), else the small models'."""
        r3d = (f"{TEACHER}:video", "align_teacher_pool", "train_student", "evaluate")
        if self.c.backbone != "small" and stage in r3d:
            return self.args.gpu_speedup_r3d
        return self.args.gpu_speedup_small

    def gpu_s(self, stage: str, core_s: float) -> float:
        """Seconds of a GPU job: start-up on the CPU, the rest sped up."""
        h = self.args.startup_s
        return h + (core_s - h) / self.speedup(stage)

    def wall_s(self, nodes: int) -> float:
        """Feature phase, then training phase, each max(longest path, work / slots)."""
        a, stages = self.args, self.stage_core_s()
        feat = [stages[s] for s in FEATURE_STAGES if s in stages]
        feat_work = sum(n * s for n, s, _ in feat)
        w_feat = max(max(s for _, s, _ in feat), feat_work / (nodes * a.cores_per_node))
        seeds = a.seeds
        gpu = {s: self.gpu_s(s, cs) for s, (_, cs, g) in stages.items() if g}
        # one fold's chain: its longest teacher, then fusion, pool, a student, an evaluate
        teachers = [t for s, t in gpu.items() if s.startswith(TEACHER)]
        others = [t for s, t in gpu.items() if not s.startswith(TEACHER)]
        path = max(teachers) + sum(others) + stages["evaluate_teachers"][1]
        work = sum(stages[s][0] * t for s, t in gpu.items()) * seeds
        w_train = max(path, work / (nodes * a.gpus_per_node))
        return w_feat + w_train + stages["report"][1]

    def storage_bytes(self) -> dict[str, float]:
        s, d = self.storage_units, self.c.dataset
        n_train, n_val, _ = self.c.fold_counts()
        folds, seeds = self.c.folds, self.args.seeds
        video = s[f"video_{d}_bytes_per_clip"] * self.c.clips
        raw = self.c.clips * self.crop_bytes
        features = sum(
            s[f"{m}_bytes_per_clip"] * self.c.clips for m in ("eda", "ecg", "emg") if d == "biovid"
        ) + (s["audio_bytes_per_window"] * self.c.clips if d == "affwild2" else 0.0)
        fixed = sum(
            v for k, v in s.items() if k.startswith(f"{d}_teachers_") and k.endswith("_bytes")
        )
        video_ckpt = s[f"{d}_teachers_video_bytes"]
        student = sum(v for k, v in s.items() if k.startswith(f"{d}_students_")) / 2
        if self.c.backbone != "small":
            r3d = s["checkpoint_video_r3d_18_bytes"]
            fixed += r3d - video_ckpt
            student += r3d - video_ckpt
        per_sample = sum(
            v * (self.c.clips if "embeddings" in k else n_train + n_val)
            for k, v in s.items()
            if k.startswith(f"{d}_") and k.endswith("_bytes_per_sample")
        )
        ckpt = folds * seeds * (fixed + len(self.methods) * student + per_sample)
        return {"crops": video, "crops_raw": raw, "features": features, "checkpoints": ckpt}


def hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.1f}" if h >= 1 else f"{h:.2f}"


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f}" if n >= 2**30 else f"{n / 2**30:.3f}"


def tables(units: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "| corpus | stage | jobs | core-h per job | core-h total | GPU-h per job (assumed) "
        "| GPU-h total (assumed) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    walls = ["| corpus | " + " | ".join(f"N = {n}" for n in args.nodes) + " |"]
    walls.append("|---|" + "---:|" * len(args.nodes))
    store = ["| corpus | crops (Parquet) | crops raw uint8 | other features | checkpoints |"]
    store.append("|---|---:|---:|---:|---:|")
    for corpus in CORPORA:
        proj = Projection(corpus, units, args)
        total_core = total_gpu = 0.0
        for stage, (jobs, core_s, on_gpu) in proj.stage_core_s().items():
            core = jobs * core_s * args.seeds if stage not in FEATURE_STAGES else jobs * core_s
            gpu = jobs * proj.gpu_s(stage, core_s) * args.seeds if on_gpu else 0.0
            total_core, total_gpu = total_core + core, total_gpu + gpu
            per_gpu = hours(proj.gpu_s(stage, core_s)) if on_gpu else "-"
            lines.append(
                f"| {corpus.name} | {stage} | {jobs} | {hours(core_s)} | {hours(core)} | "
                f"{per_gpu} | {hours(gpu) if on_gpu else '-'} |"
            )
        lines.append(
            f"| **{corpus.name}** | **all** | | | **{hours(total_core)}** | | "
            f"**{hours(total_gpu)}** |"
        )
        walls.append(
            f"| {corpus.name} | " + " | ".join(hours(proj.wall_s(n)) for n in args.nodes) + " |"
        )
        b = proj.storage_bytes()
        store.append(
            f"| {corpus.name} | {gib(b['crops'])} | {gib(b['crops_raw'])} | "
            f"{gib(b['features'])} | {gib(b['checkpoints'])} |"
        )
    return "\n".join(
        [
            "Core-hours per stage (CPU, from the measured per-unit costs):",
            "",
            *lines,
            "",
            "Wall hours on N GPU nodes:",
            "",
            *walls,
            "",
            "Storage (GiB):",
            "",
            *store,
        ]
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("units", type=Path, help="bench_units.py --json output")
    parser.add_argument("--gpu-speedup-small", type=float, default=10.0)
    parser.add_argument("--gpu-speedup-r3d", type=float, default=100.0)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--gpus-per-node", type=int, default=4)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--shards", type=int, default=64, help="crop_faces.n_shards")
    parser.add_argument("--startup-s", type=float, default=4.0, help="per-job fixed CPU s")
    parser.add_argument("--seeds", type=int, default=1, help="runs with different run.seed")
    args = parser.parse_args(argv)
    units = json.loads(args.units.read_text())
    text = tables(units, args)
    print(text)
    return text


if __name__ == "__main__":
    main()
