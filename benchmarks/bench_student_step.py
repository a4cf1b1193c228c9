"""Time one student training step: mtpkdot (teacher selection + OT + centroid) vs visual_only.

Both steps run on the same batch and the same cached teacher-pool outputs, in one process; the
script prints median times and their ratio (goal: <= 1.15). Two student inputs:

- ``features``: cached frozen video-encoder features (``train_student.student: frozen``: the
  step is the small student MLP, so the distillation terms are most of it);
- ``frames``: a fine-tuning step (``train_student.student: finetune``, the default): face clips
  through the video encoder (built by ``models.encoders.build_encoder``) and the head, forward
  and backward, both updated; the ratio is the distillation overhead on the step that runs.

It then times each part that mtpkdot adds (teacher selection, structural OT, centroid), so
the extra cost can be set against the step it is added to. On a machine with CUDA it repeats
everything there.

    python benchmarks/bench_student_step.py [--batch 128] [--dim 512] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.encoders import build_encoder, video_input
from models.losses import LOSS_TERMS, LossInputs, weighted_objective
from models.student import Student
from models.teacher_pool import PoolOutput, select_teacher
from pipeline_steps.runtime import bench_devices

WEIGHTS = {
    "visual_only": {"task": 1.0},
    "mtpkdot": {"task": 0.8, "ot": 0.2, "centroid": 0.2},
}


def labelled_pool(
    g: torch.Generator, batch: int, dim: int, device: torch.device
) -> tuple[torch.Tensor, PoolOutput]:
    """Random binary labels and cached outputs of a five-teacher pool (joint last)."""
    y = torch.randint(0, 2, (batch,), generator=g).to(device)
    pool = PoolOutput(
        ["video", "eda", "ecg", "emg", "joint"],
        torch.randn(5, batch, dim, generator=g).to(device),
        torch.randn(5, batch, 2, generator=g).to(device),
    )
    return y, pool


def make_step(method: str, device: torch.device, args: argparse.Namespace, inputs: str):
    """A closure running one optimiser step of ``method`` on a fixed random batch."""
    g = torch.Generator().manual_seed(0)
    batch, dim = args.batch, args.dim
    y, pool = labelled_pool(g, batch, dim, device)
    torch.manual_seed(0)  # the same initial weights for both methods
    params = []
    if inputs == "frames":
        shape = (batch, args.frames, args.size, args.size, 3)
        clips = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8).to(device)
        encoder = build_encoder("video", dim, args.width, 3).to(device)
        params += list(encoder.parameters())

        def features() -> torch.Tensor:
            return encoder(video_input(clips, "delta"))
    else:
        cached = torch.randn(batch, dim, generator=g).to(device)

        def features() -> torch.Tensor:
            return cached

    model = Student(dim, dim, dim, 2).to(device)
    optim = torch.optim.Adam([*params, *model.parameters()], lr=1e-3)

    def step() -> None:
        pred, z_s = model(features())
        z_t = None
        if method != "visual_only":
            z_t = select_teacher("min_loss", pool, y, "classification").z
        inputs = LossInputs(pred, y, "classification", z_student=z_s, z_teacher=z_t, topk=args.topk)
        loss, _ = weighted_objective(WEIGHTS[method], inputs)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def term_steps(device: torch.device, args: argparse.Namespace) -> dict:
    """Closures timing each part mtpkdot adds to the step, forward + backward on a student
    embedding of the step's shape: teacher selection, the structural OT term (both cosine
    matrices, anchors, Sinkhorn) and the centroid term."""
    g = torch.Generator().manual_seed(1)
    batch, dim = args.batch, args.dim
    y, pool = labelled_pool(g, batch, dim, device)
    z_s = torch.randn(batch, dim, generator=g).to(device).requires_grad_()
    z_t = select_teacher("min_loss", pool, y, "classification").z
    inputs = LossInputs(
        pool.pred[0], y, "classification", z_student=z_s, z_teacher=z_t, topk=args.topk
    )

    def term(name: str):
        return lambda: LOSS_TERMS[name](inputs).backward()

    return {
        "selection": lambda: select_teacher("min_loss", pool, y, "classification"),
        "ot": term("ot"),
        "centroid": term("centroid"),
    }


def median_times(steps: dict, device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds per step of each method, timed in alternation (the two methods share
    whatever load the machine has), after two warm-up steps each."""
    for step in steps.values():
        for _ in range(2):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--topk", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--frames", type=int, default=8, help="clip length (frames input)")
    parser.add_argument("--size", type=int, default=112, help="crop size (frames input)")
    parser.add_argument("--width", type=int, default=16, help="video encoder width")
    parser.add_argument("--frame-repeats", type=int, default=5, help="repeats, frames input")
    parser.add_argument(
        "--device", default="all", help="all (CPU, and CUDA when present), cpu, cuda or auto"
    )
    args = parser.parse_args()
    devices = bench_devices(args.device)
    print(
        f"batch {args.batch}, dim {args.dim}, top-k {args.topk}, clips {args.frames}x"
        f"{args.size}px (encoder width {args.width}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    for device in devices:
        for inputs, repeats in (("features", args.repeats), ("frames", args.frame_repeats)):
            steps = {m: make_step(m, device, args, inputs) for m in WEIGHTS}
            t = median_times(steps, device, repeats)
            ratio = t["mtpkdot"] / t["visual_only"]
            extra_ms = (t["mtpkdot"] - t["visual_only"]) * 1e3
            print(
                f"{device.type:>4} {inputs:>8}: visual_only {t['visual_only'] * 1e3:9.3f} ms | "
                f"mtpkdot {t['mtpkdot'] * 1e3:9.3f} ms | +{extra_ms:.3f} ms"
                f" | ratio {ratio:.2f} (goal <= 1.15)"
            )
        parts = median_times(term_steps(device, args), device, args.repeats)
        print(
            f"{device.type:>4} parts of the extra cost (forward + backward): "
            + ", ".join(f"{name} {t * 1e3:.3f} ms" for name, t in parts.items())
        )


if __name__ == "__main__":
    main()
