"""Per-unit CPU costs of the pipeline's steps, measured in one process on generated data.

    python benchmarks/bench_units.py [--subjects 6] [--clips-per-class 4] [--epochs 3]
        [--r3d-clips 6] [--real-frames 2] [--affwild2-people 6] [--json PATH] [--tiny]

The input of docs/scaling.md. Everything runs on one core (torch and OpenCV on one thread, the
DataLoader without workers: the rules' ``threads: 1``) and is timed with the process's CPU
time (``time.process_time``: user + system of all its threads), so the figures are per
core-second and depend little on what else runs on the machine (child processes' CPU, the
ffmpeg of extract_audio, is added from ``resource``). CPU only: no GPU figure.

1. Data, in a temporary folder: a BioVid-layout demo (``generate_biovid_demo``) and an
   Aff-Wild2-layout demo with audio (``generate_affwild2_demo``), indexed by ``index_dataset``.
2. Features, by the steps' own functions: ``crop_faces.run`` per shard (both datasets: whole
   jobs, so detector load and shard writing are included), ``crop_video`` on demo clips
   enlarged to BioVid's real frame size (1388 x 1038, face ~ 60% of the height), ``extract_physio``
   per modality, ``extract_audio.run``. Also the Parquet bytes per clip of each shard.
3. Training, by the stages' own ``main`` on fold 0 (``fit_modality_teacher`` on a subset of
   the fold for r3d_18), with MLflow replaced by a clock that notes the CPU time at the end of
   every epoch. Epoch time = median gap between epoch ends (training on the fold's training
   clips, validation on its validation clips, the per-epoch resume checkpoint), scaled to 1000
   training clips. Evaluate: the whole ``evaluate.main`` in-process (index read, checkpoint
   load, predictions, output files) scaled to 1000 test clips, an upper bound per clip.

A few clips and epochs are measured; per-1000-clip figures are linear extrapolations.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"  # before torch: one core, no DataLoader workers

import cv2  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from pipeline_steps import (  # noqa: E402
    align_teacher_pool,
    crop_faces,
    evaluate,
    extract_audio,
    extract_physio,
    index_dataset,
    train_fusion_teacher,
    train_modality_teacher,
    train_student,
)
from pipeline_steps.atomic import write_json  # noqa: E402
from pipeline_steps.config import REPO_ROOT, load_params  # noqa: E402
from pipeline_steps.crop_faces import CropSettings, crop_video  # noqa: E402
from pipeline_steps.demo_affwild2 import generate_affwild2_demo  # noqa: E402
from pipeline_steps.face_detector import FaceDetector  # noqa: E402
from pipeline_steps.layout import Layout, layout_for  # noqa: E402
from pipeline_steps.make_demo_data import (  # noqa: E402
    generate_biovid_demo,
    make_subjects,
    plan_samples,
    render_frames,
    write_video,
)
from pipeline_steps.stage import stage_context  # noqa: E402

REAL_BIOVID = (1388, 1038)  # width, height of BioVid Part A's frames
PHYSIO = ("eda", "ecg", "emg")
TINY = {  # the smoke test's sizes: seconds, not a measurement
    "make_demo_data": {"frame_size": 96, "affwild2_seconds": 3.0},
    "crop_faces": {"n_frames": 4, "size": 48},
    "train_modality_teacher": {"embed_dim": 16, "width": 4, "batch_size": 8},
    "train_fusion_teacher": {"batch_size": 8},
    "align_teacher_pool": {"batch_size": 8, "adapter_hidden": 8},
    "train_student": {"batch_size": 8, "hidden": 16, "topk": 4},
    "affwild2": {"window_frames": 16},
}


@dataclass
class Measure:
    """One measured figure: ``value`` ``unit`` from ``n`` units in ``cpu_s`` CPU seconds."""

    key: str
    label: str
    n: int
    cpu_s: float
    value: float
    unit: str


class EpochClock:
    """Stands in for a stage's MLflow run: notes the process CPU time at each epoch's end."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def log_metrics(self, values: dict[str, float], step: int | None = None) -> None:
        if step is not None:  # trainer.fit logs each epoch with its step
            self.marks.append(cpu_seconds())

    def log_params(self, values: dict[str, Any], prefix: str = "") -> None:
        """Not recorded."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Not recorded."""

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Not recorded."""

    def epoch_cpu_s(self) -> float:
        """Median CPU seconds between consecutive epoch ends (needs >= 2 epochs)."""
        gaps = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        if not gaps:
            raise ValueError("fewer than 2 epochs ran: cannot time an epoch (raise --epochs)")
        return statistics.median(gaps)


@contextlib.contextmanager
def clocked(module: ModuleType) -> Iterator[EpochClock]:
    """``module.stage_run`` (MLflow) replaced by an :class:`EpochClock` while inside."""
    clock = EpochClock()

    @contextlib.contextmanager
    def fake_run(*args: Any, **kwargs: Any) -> Iterator[EpochClock]:
        yield clock

    saved = module.stage_run
    module.stage_run = fake_run
    try:
        yield clock
    finally:
        module.stage_run = saved


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its waited-for child processes (the
    ffmpeg that extract_audio runs)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def cpu_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn``'s result and the CPU seconds it took (:func:`cpu_seconds`; printing swallowed)."""
    with contextlib.redirect_stdout(io.StringIO()):
        start = cpu_seconds()
        out = fn(*args, **kwargs)
        return out, cpu_seconds() - start


def step_args(params_file: Path, dataset: str, **extra: Any) -> list[str]:
    argv = ["--params", str(params_file), "--dataset", dataset]
    for key, value in extra.items():
        argv += [f"--{key}", str(value)]
    return argv


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def bench_params(args: argparse.Namespace, tmp: Path) -> dict:
    """params.yaml with the benchmark's data, folds, epochs and (``--tiny``) sizes."""
    params = copy.deepcopy(load_params(REPO_ROOT / "params.yaml"))
    params["run"].update(
        datasets=["biovid", "affwild2"], results_dir=str(tmp / "results"), device="cpu"
    )
    for name in ("biovid", "affwild2"):
        params["datasets"][name].update(root=str(tmp / name), demo=False)
    params["make_demo_data"].update(
        n_subjects=args.subjects,
        samples_per_class=args.clips_per_class,
        affwild2_people=args.affwild2_people,
        affwild2_seconds=args.affwild2_seconds,
    )
    params["index_dataset"].update(n_folds=args.folds, n_val_subjects=1)
    for stage in ("train_modality_teacher", "train_fusion_teacher", "align_teacher_pool"):
        params[stage].update(epochs=args.epochs, patience=args.epochs)
    params["align_teacher_pool"]["cross_fit"] = 0  # its cost: K x the chain, see scaling.md
    params["train_student"].update(
        epochs=args.epochs,
        patience=args.epochs,
        min_epochs=1,
        smooth_epochs=1,
        methods=["visual_only", "mtpkdot"],
    )
    if args.tiny:
        for section, values in TINY.items():
            target = params["datasets"][section] if section == "affwild2" else params[section]
            target.update(values)
    return params


def real_size_clips(cfg: dict, n: int, folder: Path) -> list[Path]:
    """``n`` demo clips enlarged to BioVid's frame size (the square frame scaled to the
    height, the sides padded by repeating the edge columns)."""
    width, height = REAL_BIOVID
    pad = (width - height) // 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for sample in plan_samples(make_subjects(cfg), cfg)[:n]:
        frames = [
            cv2.copyMakeBorder(
                cv2.resize(f, (height, height)),
                0,
                0,
                pad,
                width - height - pad,
                cv2.BORDER_REPLICATE,
            )
            for f in render_frames(sample, cfg)
        ]
        path = folder / f"{sample.name}.mp4"
        write_video(path, frames, cfg["fps"])
        paths.append(path)
    return paths


class Bench:
    """Runs the measurements on one temporary project and collects :class:`Measure` rows."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.params = bench_params(args, tmp)
        self.params_file = tmp / "params.yaml"
        self.params_file.write_text(yaml.safe_dump(self.params, sort_keys=False))
        self.rows: list[Measure] = []
        self.sizes: dict[str, Any] = {}
        self.storage: dict[str, float] = {}

    def add(self, key: str, label: str, n: int, cpu_s: float, value: float, unit: str) -> None:
        self.rows.append(Measure(key, label, n, round(cpu_s, 4), value, unit))

    def layout(self, dataset: str) -> Layout:
        return layout_for(self.params, dataset)

    def make_data(self) -> None:
        cfg = self.params["make_demo_data"]
        with contextlib.redirect_stdout(io.StringIO()):
            generate_biovid_demo(Path(self.params["datasets"]["biovid"]["root"]), cfg)
            generate_affwild2_demo(Path(self.params["datasets"]["affwild2"]["root"]), cfg)
        for dataset in ("biovid", "affwild2"):
            cpu_call(index_dataset.main, step_args(self.params_file, dataset))

    def crops(self, dataset: str, key: str) -> None:
        """Whole crop_faces jobs (every shard) of ``dataset``: clips and frames per core-s."""
        n_shards = self.params["crop_faces"]["n_shards"]
        cpu = sum(cpu_call(crop_faces.run, self.params, dataset, s)[1] for s in range(n_shards))
        shards = [self.layout(dataset).video_shard(s) for s in range(n_shards)]
        n = sum(parquet_rows(p) for p in shards)
        frames = self.frames_per_clip(dataset)
        self.add(
            f"{key}_clips", f"crop_faces {dataset} (demo frames)", n, cpu, n / cpu, "clips/core-s"
        )
        self.add(
            f"{key}_frames",
            f"crop_faces {dataset}: face crops",
            n * frames,
            cpu,
            n * frames / cpu,
            "crops/core-s",
        )
        self.storage[f"video_{dataset}_bytes_per_clip"] = sum(p.stat().st_size for p in shards) / n

    def frames_per_clip(self, dataset: str) -> int:
        if dataset == "affwild2":
            return int(self.params["datasets"]["affwild2"]["window_frames"])
        return int(self.params["crop_faces"]["n_frames"])

    def real_frame_crops(self) -> None:
        """crop_video on clips at BioVid's real frame size (detector loaded beforehand): with
        crop_faces' settings, and with T consecutive frames each cropped (T = the Aff-Wild2
        window: what crop_windows does per window, plus one seek)."""
        n = self.args.real_frames
        if not n:
            return
        paths = real_size_clips(self.params["make_demo_data"], n, self.tmp / "real_size")
        settings = CropSettings.from_params(self.params["crop_faces"])
        t = self.frames_per_clip("affwild2")
        start_s = settings.window_s[0]
        window = replace(
            settings,
            window_s=(start_s, start_s + t / self.params["make_demo_data"]["fps"]),
            n_frames=t,
        )
        size = f"{REAL_BIOVID[0]}x{REAL_BIOVID[1]}"
        with FaceDetector(settings.model_path, settings.min_score) as det:
            crop_video(paths[0], det, settings)  # warm-up: model and codec loaded
            for key, cfg, what in (
                ("crop_biovid_real_clips", settings, f"{settings.n_frames} crops"),
                ("crop_window_real_frames", window, f"{t} consecutive frames"),
            ):
                start = cpu_seconds()
                found = [crop_video(p, det, cfg)[0].face_found_ratio for p in paths]
                cpu = cpu_seconds() - start
                label = f"crop_video at {size}, {what} (face {statistics.mean(found):.0%})"
                if key == "crop_window_real_frames":
                    self.add(key, label, n * t, cpu, n * t / cpu, "frames/core-s")
                else:
                    self.add(key, label, n, cpu, n / cpu, "clips/core-s")

    def physio(self) -> None:
        for m in PHYSIO:
            _, cpu = cpu_call(
                extract_physio.main, step_args(self.params_file, "biovid", modality=m)
            )
            path = self.layout("biovid").physio_shard(m)
            n = parquet_rows(path)
            self.add(
                f"physio_{m}", f"extract_physio {m} (neurokit2)", n, cpu, n / cpu, "windows/core-s"
            )
            self.storage[f"{m}_bytes_per_clip"] = path.stat().st_size / n

    def audio(self) -> None:
        _, cpu = cpu_call(extract_audio.run, self.params, "affwild2")
        path = self.layout("affwild2").physio_shard("audio")
        n = parquet_rows(path)
        self.add(
            "audio_logmel",
            "extract_audio log-mel (ffmpeg + librosa)",
            n,
            cpu,
            n / cpu,
            "windows/core-s",
        )
        self.storage["audio_bytes_per_window"] = path.stat().st_size / n

    def fold_sizes(self, dataset: str) -> tuple[int, int, int]:
        import pandas as pd

        index = pd.read_parquet(self.layout(dataset).index)
        counts = index["split_0"].value_counts()
        return tuple(int(counts.get(s, 0)) for s in ("train", "val", "test"))

    def train(self, module: ModuleType, key: str, label: str, dataset: str, **extra: Any) -> None:
        """One stage's main on fold 0; epoch CPU seconds per 1000 training clips."""
        n_train, n_val, _ = self.fold_sizes(dataset)
        with clocked(module) as clock:
            _, job = cpu_call(module.main, step_args(self.params_file, dataset, fold=0, **extra))
        epoch = clock.epoch_cpu_s()
        self.add(
            key,
            f"{label} ({n_train} train + {n_val} val clips)",
            n_train,
            epoch,
            epoch / n_train * 1000,
            "core-s/epoch/1000 clips",
        )
        self.sizes[f"{key}_job_cpu_s"] = round(job, 3)
        self.sizes[f"{key}_epochs"] = len(clock.marks)

    def r3d(self) -> None:
        """r3d_18 video teacher (``fit_modality_teacher``) on a subset of fold 0."""
        n = self.args.r3d_clips
        if not n:
            return
        ns = argparse.Namespace(params=str(self.params_file), dataset="biovid", fold=0)
        with contextlib.redirect_stdout(io.StringIO()):
            ctx = stage_context(ns, salt="bench-r3d")
        params = copy.deepcopy(ctx.params)
        params["train_modality_teacher"]["backbones"]["video"] = "r3d_18"
        ctx = replace(ctx, params=params)
        splits = ctx.splits()
        train, val = splits.train[:n], splits.val[: max(2, n // 2)]
        clock = EpochClock()
        fitted, _ = cpu_call(
            train_modality_teacher.fit_modality_teacher,
            ctx,
            "video",
            train,
            val,
            clock,
            name="video-r3d_18",
        )
        epoch = clock.epoch_cpu_s()
        self.add(
            "teacher_video_r3d_18",
            f"video teacher r3d_18 ({len(train)} train + {len(val)} val clips)",
            len(train),
            epoch,
            epoch / len(train) * 1000,
            "core-s/epoch/1000 clips",
        )
        path = self.tmp / "r3d_18.pt"
        torch.save(fitted.model.state_dict(), path)
        self.storage["checkpoint_video_r3d_18_bytes"] = path.stat().st_size

    def evaluation(self, dataset: str, method: str) -> None:
        _, _, n_test = self.fold_sizes(dataset)
        with clocked(evaluate):
            _, cpu = cpu_call(
                evaluate.main, step_args(self.params_file, dataset, fold=0, method=method)
            )
        self.add(
            f"evaluate_{dataset}_{method}",
            f"evaluate {dataset} {method} (whole job, {n_test} test clips)",
            n_test,
            cpu,
            cpu / n_test * 1000,
            "core-s/1000 clips",
        )

    def fold_chain(self, dataset: str) -> None:
        """Teachers, fusion, pool, students and evaluation of ``dataset``'s fold 0."""
        ds = self.params["datasets"][dataset]
        for m in ds["modalities"]:
            kind = "small" if m in PHYSIO or m == "audio" else "small CNN"
            self.train(
                train_modality_teacher,
                f"teacher_{dataset}_{m}",
                f"{m} teacher {kind}",
                dataset,
                modality=m,
            )
        self.train(train_fusion_teacher, f"fusion_{dataset}", "fusion teacher", dataset)
        self.train(align_teacher_pool, f"pool_{dataset}", "align teacher pool", dataset)
        for method in self.params["train_student"]["methods"]:
            self.train(
                train_student,
                f"student_{dataset}_{method}",
                f"student {method} ({self.params['train_student']['student']})",
                dataset,
                method=method,
            )
            self.evaluation(dataset, method)
        self.checkpoint_sizes(dataset)

    def checkpoint_sizes(self, dataset: str) -> None:
        """Bytes of every checkpoint of fold 0; per sample for the per-sample caches."""
        fold = self.layout(dataset).fold_dir(0)
        n_all = sum(self.fold_sizes(dataset))
        n_fit = sum(self.fold_sizes(dataset)[:2])
        for path in sorted(fold.rglob("*.pt")):
            name = f"{dataset}_{path.parent.name}_{path.stem}"
            size = path.stat().st_size
            if path.parent.name == "embeddings":
                self.storage[f"{name}_bytes_per_sample"] = size / n_all
            elif path.stem == "pool_outputs":
                self.storage[f"{name}_bytes_per_sample"] = size / n_fit
            else:
                self.storage[f"{name}_bytes"] = size

    def run(self) -> None:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        self.make_data()
        for dataset in ("biovid", "affwild2"):
            n_train, n_val, n_test = self.fold_sizes(dataset)
            self.sizes[f"{dataset}_fold0"] = {"train": n_train, "val": n_val, "test": n_test}
        self.crops("biovid", "crop_biovid")
        self.real_frame_crops()
        self.crops("affwild2", "crop_affwild2")
        self.physio()
        self.audio()
        self.fold_chain("biovid")
        self.r3d()
        self.fold_chain("affwild2")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
    }


def print_table(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['cpu']}, {m['cores']} cores; load before {m['load_before']}, "
        f"after {m['load_after']}; torch {m['torch']} on 1 thread; CPU time, CPU only"
    )
    print(f"{'measure':<62} {'n':>5} {'CPU s':>8} {'value':>10}  unit")
    for row in result["measures"]:
        print(
            f"{row['label']:<62} {row['n']:>5} {row['cpu_s']:>8.2f} {row['value']:>10.2f}  "
            f"{row['unit']}"
        )
    print("storage (bytes):")
    for key, value in result["storage"].items():
        print(f"  {key:<58} {value:>14,.0f}")
    print("GPU: not measured (CPU only)")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=6, help="BioVid demo subjects")
    parser.add_argument("--clips-per-class", type=int, default=4, help="BioVid demo, per subject")
    parser.add_argument("--folds", type=int, default=4, help="folds (one validation subject)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training (>= 2)")
    parser.add_argument("--r3d-clips", type=int, default=6, help="r3d_18 training clips (0: skip)")
    parser.add_argument("--real-frames", type=int, default=2, help="clips at 1388x1038 (0: skip)")
    parser.add_argument("--affwild2-people", type=int, default=6)
    parser.add_argument("--affwild2-seconds", type=float, default=6.0)
    parser.add_argument("--tiny", action="store_true", help="tiny crops and models (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    info = machine() | {"load_before": [round(x, 2) for x in os.getloadavg()]}
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_units-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.run()
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "machine": info,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "wall_s": round(time.perf_counter() - wall, 1),
        "sizes": bench.sizes,
        "measures": [asdict(r) for r in bench.rows],
        "storage": {k: round(v, 1) for k, v in bench.storage.items()},
    }
    print_table(result)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
