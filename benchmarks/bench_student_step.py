"""Time one student training step: mtpkdot (teacher selection + OT + centroid) vs visual_only.

Both steps run on the same batch of cached features and cached teacher-pool outputs (as
``train_student`` does), in one process; the script prints median times and their ratio
(goal: <= 1.15). On a machine with CUDA it repeats the comparison there.

    python benchmarks/bench_student_step.py [--batch 128] [--dim 512] [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from models.losses import LossInputs, weighted_objective
from models.student import Student
from models.teacher_pool import PoolOutput, select_teacher

WEIGHTS = {
    "visual_only": {"task": 1.0},
    "mtpkdot": {"task": 0.8, "ot": 0.2, "centroid": 0.2},
}


def make_step(method: str, device: torch.device, batch: int, dim: int, topk: int):
    """A closure running one optimiser step of ``method`` on a fixed random batch."""
    g = torch.Generator().manual_seed(0)
    f_v = torch.randn(batch, dim, generator=g).to(device)
    y = torch.randint(0, 2, (batch,), generator=g).to(device)
    pool = PoolOutput(
        ["video", "eda", "ecg", "emg", "joint"],
        torch.randn(5, batch, dim, generator=g).to(device),
        torch.randn(5, batch, 2, generator=g).to(device),
    )
    model = Student(dim, dim, dim, 2).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        pred, z_s = model(f_v)
        z_t = None
        if method != "visual_only":
            z_t = select_teacher("min_loss", pool, y, "classification").z
        inputs = LossInputs(pred, y, "classification", z_student=z_s, z_teacher=z_t, topk=topk)
        loss, _ = weighted_objective(WEIGHTS[method], inputs)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    return step


def median_time(step, device: torch.device, repeats: int) -> float:
    for _ in range(5):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--topk", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"batch {args.batch}, dim {args.dim}, top-k {args.topk}, torch {torch.__version__}")
    for device in devices:
        t = {
            m: median_time(
                make_step(m, device, args.batch, args.dim, args.topk), device, args.repeats
            )
            for m in WEIGHTS
        }
        ratio = t["mtpkdot"] / t["visual_only"]
        print(
            f"{device.type:>4}: visual_only {t['visual_only'] * 1e3:8.3f} ms | "
            f"mtpkdot {t['mtpkdot'] * 1e3:8.3f} ms | ratio {ratio:.2f} (goal <= 1.15)"
        )


if __name__ == "__main__":
    main()
