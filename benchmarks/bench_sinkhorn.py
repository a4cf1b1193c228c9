"""Speed and agreement of our Sinkhorn divergence against geomloss and POT (not a test).

Inputs are what the structural KD term feeds the solver: for B samples, the rows of the
shifted cosine-similarity matrices of clustered teacher / student embeddings at the teacher's
k = 30 least-similar columns, i.e. two clouds of B points in R^30 (float32).

Timed: forward + backward w.r.t. both clouds, median over repeats after a warm-up, all in
this process on the same inputs (each method gets its own leaf copies of the same two
clouds); the methods run in rounds, in a new random order each round, so that load changes on
a shared machine and the caches left by the method before hit them alike.
Every method is timed as shipped: no reference is slowed down or restricted.

* epsilon-scaling (blur 0.1, scaling 0.5): ours vs geomloss ``SamplesLoss("sinkhorn", p=2,
  blur=0.1, backend="tensorized")`` with its defaults (debiased, scaling 0.5, the same
  cost 1/2 |x - y|^2, eps = blur**2 and the same bounding-box diameter schedule): the same
  quantity by the same scheme, so the values agree to rounding (rel. diff ~1e-7 in float32);
* a fixed number of iterations at eps = 0.01: ours (``n_iters``) vs POT
  ``ot.solve_sample(x, y, metric="sqeuclidean", reg=2 eps, debias=True, max_iter=n, tol=0)``
  with ``grad="envelope"`` and with ``grad="autodiff"`` (POT's M = 2 C, hence reg = 2 eps and
  value / 2). POT's own ``value`` is primal (<pi, M> + reg KL), ours is the dual value; they
  agree at convergence only, so the value check at the same iteration count uses the dual
  value of POT's potentials (log_u, log_v), the same quantity as ours. Both are printed.

Usage: python benchmarks/bench_sinkhorn.py [--threads N] [--sizes 128 512] [--iters 100]
       [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections.abc import Callable

import ot
import torch
from geomloss import SamplesLoss

from models.sinkhorn import sinkhorn_divergence
from models.structural_kd import cosine_similarity_matrix, shift_nonnegative, topk_anchor_indices
from pipeline_steps.runtime import bench_devices

BLUR = 0.1
EPS = BLUR**2


def make_clouds(batch: int, k: int, device: torch.device, seed: int = 0):
    """Teacher and student similarity rows (B, k) of clustered embeddings, as in training."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (batch,), generator=gen)
    centers = torch.randn(4, 64, generator=gen)
    z_t = centers[labels] + 0.7 * torch.randn(batch, 64, generator=gen)
    z_s = centers[labels] @ torch.randn(64, 64, generator=gen) / 8 + torch.randn(
        batch, 64, generator=gen
    )
    s_t, s_s = cosine_similarity_matrix(z_t), cosine_similarity_matrix(z_s)
    cols = topk_anchor_indices(s_t, k)
    x = shift_nonnegative(s_t).gather(1, cols)
    y = shift_nonnegative(s_s).gather(1, cols)
    return x.to(device).contiguous(), y.to(device).contiguous()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_methods(
    methods: dict[str, Loss],
    x: torch.Tensor,
    y: torch.Tensor,
    repeats: int,
    budget_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, tuple[float, float]]:
    """Median seconds of forward + backward and the value of each method.

    After two warm-up calls each, the methods run in rounds, each round in a new (seeded)
    random order, so that a change of machine load, and the cache state the previous method
    leaves behind, hit all of them alike; a method drops out after ``repeats`` runs, or after
    3 runs once its own time exceeds ``budget_s``.
    """
    leaves = {
        name: (x.detach().clone().requires_grad_(True), y.detach().clone().requires_grad_(True))
        for name in methods
    }
    values = {}
    for name, loss in methods.items():
        for _ in range(2):
            out = loss(*leaves[name])
            out.backward()
            values[name] = float(out.detach())
    times: dict[str, list[float]] = {name: [] for name in methods}
    shuffler = random.Random(0)
    while True:
        todo = [
            n
            for n in methods
            if len(times[n]) < 3 or (len(times[n]) < repeats and sum(times[n]) < budget_s)
        ]
        if not todo:
            break
        for name in shuffler.sample(todo, len(todo)):
            u, v = leaves[name]
            u.grad = v.grad = None
            _sync(u.device)
            t0 = clock()
            methods[name](u, v).backward()
            _sync(u.device)
            times[name].append(clock() - t0)
    return {name: (statistics.median(times[name]), values[name]) for name in methods}


def pot_solve(x: torch.Tensor, y: torch.Tensor, n_iters: int, grad: str):  # noqa: ANN201
    """POT's debiased Sinkhorn on our convention (reg = 2 eps: POT's cost is |x-y|^2), exactly
    ``n_iters`` iterations (tol=0)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: "Sinkhorn did not converge"
        return ot.solve_sample(
            x,
            y,
            metric="sqeuclidean",
            reg=2 * EPS,
            debias=True,
            max_iter=n_iters,
            tol=0,
            grad=grad,
        )


def pot_loss(n_iters: int, grad: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pot_solve(x, y, n_iters, grad).value / 2

    return loss


def pot_dual_value(x: torch.Tensor, y: torch.Tensor, n_iters: int) -> float:
    """S_eps as our dual value <a, f> + <b, g>, from the potentials POT reaches in n_iters."""
    res = pot_solve(x, y, n_iters, "detach")

    def dual(r, n: int, m: int) -> torch.Tensor:
        log_u, log_v = r.potentials
        return EPS * (log_u.mean() + log_v.mean() + torch.log(torch.tensor(float(n * m))))

    n, m = x.shape[0], y.shape[0]
    value = dual(res.log["res_ab"], n, m) - 0.5 * (
        dual(res.log["res_aa"], n, n) + dual(res.log["res_bb"], m, m)
    )
    return float(value)


def run(
    device: torch.device,
    batch: int,
    k: int,
    n_iters: int,
    repeats: int,
    budget_s: float,
    clock: str = "wall",
) -> None:
    x, y = make_clouds(batch, k, device)
    names = {
        "ours": "ours, epsilon-scaling",
        "geomloss": "geomloss tensorized, epsilon-scaling",
        "ours_fixed": f"ours, {n_iters} iterations",
        "envelope": f"POT solve_sample grad=envelope, {n_iters} it.",
        "autodiff": f"POT solve_sample grad=autodiff, {n_iters} it.",
    }
    methods: dict[str, Loss] = {
        "ours": lambda u, v: sinkhorn_divergence(u, v, blur=BLUR),
        "geomloss": SamplesLoss("sinkhorn", p=2, blur=BLUR, backend="tensorized"),
        "ours_fixed": lambda u, v: sinkhorn_divergence(u, v, blur=BLUR, n_iters=n_iters),
        "envelope": pot_loss(n_iters, "envelope"),
        "autodiff": pot_loss(n_iters, "autodiff"),
    }
    timer = time.perf_counter if clock == "wall" or device.type == "cuda" else time.process_time
    res = time_methods(methods, x, y, repeats, budget_s, timer)
    v_dual = pot_dual_value(x, y, n_iters)
    (t_ours, v_ours), (t_fix, v_fix) = res["ours"], res["ours_fixed"]
    print(
        f"\n{device.type}, threads={torch.get_num_threads()}, B={batch} points in R^{k}, float32, "
        f"blur={BLUR} (eps={EPS:g}); 'ours faster' compares solvers of the same kind"
    )
    unit = "median ms" if timer is time.perf_counter else "median CPU ms"
    print(f"{'method':44s} {unit:>13s} {'ours faster':>12s} {'value':>13s}  rel. diff vs ours")
    for key, name in names.items():
        t, v = res[key]
        ratio, note = "", ""
        if key == "geomloss":
            ratio, note = f"{t / t_ours:.1f}x", f"{abs(v - v_ours) / abs(v):.1e}"
        elif key in ("envelope", "autodiff"):
            ratio = f"{t / t_fix:.1f}x"
            note = (
                f"{abs(v_dual - v_fix) / abs(v_dual):.1e} (POT dual); "
                f"{abs(v - v_fix) / abs(v):.1e} (POT primal value)"
            )
        print(f"{name:44s} {1e3 * t:13.2f} {ratio:>12s} {v:13.6e}  {note}")
    rel = abs(v_dual - v_fix) / abs(v_dual)
    print(
        f"at {n_iters} iterations, our dual value {v_fix:.8e} vs the dual value of POT's "
        f"potentials {v_dual:.8e} (same iterates): rel. diff {rel:.1e}"
    )
    goals = [
        ("vs geomloss", res["geomloss"][0] / t_ours, 3.0),
        ("vs POT envelope", res["envelope"][0] / t_fix, 10.0),
        ("vs POT autodiff", res["autodiff"][0] / t_fix, 10.0),
    ]
    met = [
        f"{name} {r:.1f}x (goal >= {g:g}x: {'met' if r >= g else 'NOT met'})"
        for name, r, g in goals
    ]
    met.append(f"value rel. diff {rel:.1e} (goal <= 1e-5: {'met' if rel <= 1e-5 else 'NOT met'})")
    print("goals: " + "; ".join(met))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--dim", type=int, default=30, help="k, the points' dimension")
    parser.add_argument("--iters", type=int, default=100, help="fixed iteration count (POT)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per method at most")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier on a busy shared "
        "machine; with one thread it is the work done). CUDA is always timed on the wall clock",
    )
    parser.add_argument(
        "--device", default="all", help="all (CPU, and CUDA when present), cpu, cuda or auto"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = bench_devices(args.device)
    print(
        f"torch {torch.__version__}, POT {ot.__version__}, geomloss "
        f"{__import__('geomloss').__version__}"
    )
    for device in devices:
        for batch in args.sizes:
            run(device, batch, args.dim, args.iters, args.repeats, args.budget, args.clock)


if __name__ == "__main__":
    main()
