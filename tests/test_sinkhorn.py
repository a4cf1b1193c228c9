"""Our log-domain Sinkhorn against POT and geomloss, its properties and its gradients.

Conventions mapped between the libraries (checked in the POT 0.9.7 / geomloss 0.3.1 code):

* Ours and geomloss: cost C = 1/2 |x - y|^2, eps = blur**2, OT_eps = <pi, C> + eps KL(pi | ab)
  as the dual value <a, f> + <b, g>; S_eps = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2.
* POT's samples API uses M = |x - y|^2 = 2 C (metric "sqeuclidean", no 1/2). With reg = 2 eps,
  M / reg = C / eps, so the plans are identical and every POT value is twice ours.
* ``ot.sinkhorn2`` returns only the transport part <plan, M> (no entropy), and
  ``ot.bregman.empirical_sinkhorn_divergence`` returns
  max(0, <pi_ab, M_ab> - (<pi_aa, M_aa> + <pi_bb, M_bb>) / 2): transport parts only, clipped
  at 0 (its docstring says so). It is compared with the same combination of our
  ``transport_cost`` values, not with ``sinkhorn_divergence``.
* ``ot.solve_sample(..., reg, debias=True).value`` is the entropic debiased value, computed on
  the primal side (<pi, M> + reg KL(pi | ab)); it equals the dual value at convergence only.
* POT's ``method="sinkhorn_log"`` with ``stopThr=0`` runs exactly ``numItermax`` iterations,
  each updating v then u from u = v = 0 (unit scalings): the iterates of our fixed mode.
  log_u = log a + f / eps and log_v = log b + g / eps relate its scalings to our potentials.
"""

from __future__ import annotations

import math
import warnings

import ot
import pytest
import torch
from geomloss import SamplesLoss

import models.sinkhorn as sinkhorn_module
from models.sinkhorn import sinkhorn_divergence, sinkhorn_ot
from models.structural_kd import (
    cosine_similarity_matrix,
    shift_nonnegative,
    structural_ot_loss,
    topk_anchor_indices,
)

F64 = torch.float64


def _clouds(n: int, m: int, d: int = 3, seed: int = 0, shift: float = 0.3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, d, generator=gen, dtype=F64)
    y = torch.rand(m, d, generator=gen, dtype=F64) + shift
    return x, y


def _weights(n: int, seed: int) -> torch.Tensor:
    w = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=F64) + 0.2
    return w / w.sum()


def _uniform(n: int) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=F64)


def _pot_sinkhorn(a, b, x, y, eps, n_iters):
    """POT's plan and log-domain scalings for cost 1/2 |x - y|^2."""
    cost = 0.5 * torch.cdist(x, y) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan, log = ot.sinkhorn(
            a, b, cost, eps, method="sinkhorn_log", numItermax=n_iters, stopThr=0, log=True
        )
        transport = ot.sinkhorn2(
            a, b, cost, eps, method="sinkhorn_log", numItermax=n_iters, stopThr=0
        )
    dual = a @ (eps * (log["log_u"] - a.log())) + b @ (eps * (log["log_v"] - b.log()))
    return plan, transport, dual


# ------------------------------------------------------------------ plain OT vs POT
@pytest.mark.parametrize("n_iters", [1, 7, 60])
@pytest.mark.parametrize("weighted", [False, True])
def test_plan_transport_cost_and_value_match_pot(n_iters: int, weighted: bool) -> None:
    x, y = _clouds(7, 5)
    a, b = (_weights(7, 1), _weights(5, 2)) if weighted else (_uniform(7), _uniform(5))
    eps = 0.05
    value, transport, plan = sinkhorn_ot(x, y, eps, n_iters, a=a, b=b)
    pot_plan, pot_transport, pot_dual = _pot_sinkhorn(a, b, x, y, eps, n_iters)
    torch.testing.assert_close(plan, pot_plan, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(transport, pot_transport, rtol=1e-6, atol=0)
    torch.testing.assert_close(value, pot_dual, rtol=1e-6, atol=0)


def test_plain_ot_batched_equals_looped() -> None:
    xs = torch.stack([_clouds(6, 4, seed=s)[0] * (s + 1) for s in range(3)])
    ys = torch.stack([_clouds(6, 4, seed=s)[1] for s in range(3)])
    values, transports, plans = sinkhorn_ot(xs, ys, 0.1, 25)
    for p in range(3):
        v, t, pl = sinkhorn_ot(xs[p], ys[p], 0.1, 25)
        torch.testing.assert_close(values[p], v)
        torch.testing.assert_close(transports[p], t)
        torch.testing.assert_close(plans[p], pl)


# ------------------------------------------------------------------ divergence vs POT
@pytest.mark.parametrize(("n", "m"), [(8, 8), (8, 5)])
def test_fixed_iterations_match_pot_iterates(n: int, m: int) -> None:
    """Not converged (20 iterations): same iterates, so the same dual values."""
    x, y = _clouds(n, m, seed=3)
    a, b = _uniform(n), _uniform(m)
    eps, n_iters = 0.01, 20
    ours = sinkhorn_divergence(x, y, blur=math.sqrt(eps), n_iters=n_iters)
    ab = _pot_sinkhorn(a, b, x, y, eps, n_iters)[2]
    aa = _pot_sinkhorn(a, a, x, x, eps, n_iters)[2]
    bb = _pot_sinkhorn(b, b, y, y, eps, n_iters)[2]
    torch.testing.assert_close(ours, ab - 0.5 * (aa + bb), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("accept", "absorb", "switch", "block"),
    [
        (None, None, None, None),
        (1e-3, 20.0, 10.0, 4),
        (40.0, 0.0, 10.0, 4),
        (40.0, 30.0, 10.0, 1),
        (6.0, 3.0, 10.0, 7),
        (40.0, 30.0, -1.0, 4),
    ],
    ids=[
        "default",
        "always-rejected",
        "absorb-every-block",
        "one-update-blocks",
        "blocks-often-rejected",
        "log-domain-only",
    ],
)
def test_scaling_domain_keeps_the_iterates(
    monkeypatch: pytest.MonkeyPatch,
    accept: float | None,
    absorb: float | None,
    switch: float | None,
    block: int | None,
) -> None:
    """Matrix-vector (scaling-domain) iterations, absorptions, rejected blocks and fall-backs
    to the log domain all give POT's log-domain iterates, with unequal sizes (padding) and
    weights."""
    domain = sinkhorn_module._ScalingDomain
    if accept is not None:
        monkeypatch.setattr(domain, "_ACCEPT_LOG2", accept)
        monkeypatch.setattr(domain, "_ABSORB_LOG2", absorb)
        monkeypatch.setattr(domain, "_BLOCK", block)
        monkeypatch.setattr(sinkhorn_module, "_SWITCH_LOG2", switch)
    accepted: list[int] = []
    run = domain.run
    monkeypatch.setattr(
        domain, "run", lambda self, n: accepted.append(run(self, n)) or accepted[-1]
    )
    x, y = _clouds(9, 6, seed=21)
    a, b = _weights(9, 22), _weights(6, 23)
    eps, n_iters = 0.01, 60
    ours = sinkhorn_divergence(x, y, blur=math.sqrt(eps), n_iters=n_iters, a=a, b=b)
    ab = _pot_sinkhorn(a, b, x, y, eps, n_iters)[2]
    aa = _pot_sinkhorn(a, a, x, x, eps, n_iters)[2]
    bb = _pot_sinkhorn(b, b, y, y, eps, n_iters)[2]
    torch.testing.assert_close(ours, ab - 0.5 * (aa + bb), rtol=1e-9, atol=1e-12)
    if switch == -1.0:
        assert not accepted
    elif accept == 1e-3:
        assert accepted and not any(accepted)
    else:
        assert sum(accepted) > n_iters // 2


def test_transport_parts_match_pot_empirical_sinkhorn_divergence() -> None:
    """POT's empirical_sinkhorn_divergence = 2 max(0, t_ab - (t_aa + t_bb) / 2), t = <pi, C>."""
    x, y = _clouds(9, 6, seed=4, shift=0.5)
    eps, n_iters = 0.02, 30
    t_ab = sinkhorn_ot(x, y, eps, n_iters)[1]
    t_aa = sinkhorn_ot(x, x, eps, n_iters)[1]
    t_bb = sinkhorn_ot(y, y, eps, n_iters)[1]
    expected = 2 * torch.clamp(t_ab - 0.5 * (t_aa + t_bb), min=0)
    assert expected > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pot = ot.bregman.empirical_sinkhorn_divergence(
            x, y, 2 * eps, numIterMax=n_iters, stopThr=0, method="sinkhorn_log"
        )
    torch.testing.assert_close(pot.reshape(()), expected, rtol=1e-6, atol=0)  # POT: shape (1,)


@pytest.mark.parametrize("weighted", [False, True])
def test_converged_divergence_matches_pot_entropic_value(weighted: bool) -> None:
    """At convergence our dual S_eps equals POT's primal debiased entropic value / 2."""
    x, y = _clouds(8, 6, seed=5)
    a, b = (_weights(8, 6), _weights(6, 7)) if weighted else (None, None)
    blur, n_iters = 0.3, 400
    ours = sinkhorn_divergence(x, y, blur=blur, n_iters=n_iters, a=a, b=b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: POT warns that it "did not converge"
        res = ot.solve_sample(
            x,
            y,
            a=a,
            b=b,
            metric="sqeuclidean",
            reg=2 * blur**2,
            debias=True,
            max_iter=n_iters,
            tol=0,
        )
    torch.testing.assert_close(ours, res.value / 2, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ divergence vs geomloss
@pytest.mark.parametrize(
    ("n", "m", "blur"), [(20, 20, 0.1), (20, 13, 0.1), (30, 30, 0.05), (12, 12, 0.5)]
)
def test_epsilon_scaling_matches_geomloss(n: int, m: int, blur: float) -> None:
    """The same schedule (the diameter's temperature twice), damped updates and final
    extrapolation as geomloss: value and gradients agree to rounding in float64."""
    x, y = _clouds(n, m, d=4, seed=n + m)
    x.requires_grad_(True)
    y.requires_grad_(True)
    ours = sinkhorn_divergence(x, y, blur=blur)
    ref = SamplesLoss("sinkhorn", p=2, blur=blur, backend="tensorized")(x, y)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=0)
    g_ours = torch.autograd.grad(ours, (x, y))
    g_ref = torch.autograd.grad(ref, (x, y))
    for got, want in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10 * want.abs().max().item())


def test_epsilon_scaling_matches_geomloss_batched() -> None:
    """Each problem of a batch keeps its own diameter: geomloss called per problem (a batched
    geomloss call shares the largest diameter, a slightly different schedule)."""
    x = torch.rand(3, 15, 5, dtype=F64, generator=torch.Generator().manual_seed(8))
    y = torch.rand(3, 15, 5, dtype=F64, generator=torch.Generator().manual_seed(9)) * 1.5
    loss = SamplesLoss("sinkhorn", p=2, blur=0.1, backend="tensorized")
    ref = torch.stack([loss(x[p], y[p]) for p in range(3)])
    torch.testing.assert_close(sinkhorn_divergence(x, y), ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(sinkhorn_divergence(x, y), loss(x, y), rtol=1e-2, atol=0)


# ------------------------------------------------------------------ properties
@pytest.mark.parametrize("n_iters", [0, 50])
def test_divergence_of_a_cloud_with_itself_is_zero(n_iters: int) -> None:
    x, _ = _clouds(10, 1, seed=11)
    assert abs(sinkhorn_divergence(x, x.clone(), n_iters=n_iters).item()) < 1e-12


def test_symmetry() -> None:
    x, y = _clouds(10, 7, seed=12)
    # epsilon-scaling uses symmetric (simultaneous) updates: symmetric at every iteration
    torch.testing.assert_close(
        sinkhorn_divergence(x, y), sinkhorn_divergence(y, x), rtol=1e-12, atol=0
    )
    # alternating updates are symmetric at convergence
    s_xy = sinkhorn_divergence(x, y, blur=0.3, n_iters=300)
    s_yx = sinkhorn_divergence(y, x, blur=0.3, n_iters=300)
    torch.testing.assert_close(s_xy, s_yx, rtol=1e-9, atol=0)


@pytest.mark.parametrize("seed", range(5))
def test_divergence_is_nonnegative(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=gen, dtype=F64)
    y = torch.randn(12, 4, generator=gen, dtype=F64) * 0.7 + 0.1
    assert sinkhorn_divergence(x, y).item() >= 0
    assert sinkhorn_divergence(x, y, blur=0.5, n_iters=200).item() >= 0


@pytest.mark.parametrize("n_iters", [0, 15])
def test_batched_equals_looped(n_iters: int) -> None:
    """Problems of very different diameters: each keeps its own epsilon schedule."""
    gen = torch.Generator().manual_seed(13)
    scales = torch.tensor([0.05, 1.0, 4.0], dtype=F64).view(3, 1, 1)
    xs = torch.randn(3, 9, 2, generator=gen, dtype=F64) * scales
    ys = torch.randn(3, 9, 2, generator=gen, dtype=F64) * scales + 0.2
    batched = sinkhorn_divergence(xs, ys, n_iters=n_iters)
    looped = torch.stack([sinkhorn_divergence(xs[p], ys[p], n_iters=n_iters) for p in range(3)])
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("n_iters", [0, 40])
def test_padding_of_unequal_sizes_is_exact(n_iters: int) -> None:
    """N != M pads y with zero-weight points: the same value as explicit zero weights."""
    x, y = _clouds(9, 4, seed=14)
    padded_y = torch.cat([y, y[:1].expand(5, 3)])
    b = torch.cat([_uniform(4), torch.zeros(5, dtype=F64)])
    ref = sinkhorn_divergence(x, padded_y, blur=0.3, n_iters=n_iters, b=b)
    torch.testing.assert_close(sinkhorn_divergence(x, y, blur=0.3, n_iters=n_iters), ref)


def test_unequal_sizes_far_from_the_origin_match_geomloss() -> None:
    x, y = _clouds(17, 6, d=5, seed=24)
    x, y = x + 50.0, y + 50.0
    ref = SamplesLoss("sinkhorn", p=2, blur=0.1, backend="tensorized")(x, y)
    torch.testing.assert_close(sinkhorn_divergence(x, y), ref, rtol=1e-9, atol=0)


def test_float32_close_to_float64() -> None:
    x, y = _clouds(64, 64, d=30, seed=15)
    s64 = sinkhorn_divergence(x, y)
    s32 = sinkhorn_divergence(x.float(), y.float())
    assert s32.dtype == torch.float32
    torch.testing.assert_close(s32.double(), s64, rtol=1e-4, atol=0)


def test_no_grad_and_detached_inputs() -> None:
    x, y = _clouds(6, 6)
    with torch.no_grad():
        value = sinkhorn_divergence(x.requires_grad_(True), y)
    assert not value.requires_grad
    assert not sinkhorn_divergence(x.detach(), y).requires_grad


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize(("n", "m"), [(5, 5), (5, 4)])
def test_gradcheck_fixed_iterations(n: int, m: int) -> None:
    x, y = _clouds(n, m, d=2, seed=16)
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda u, v: sinkhorn_divergence(u, v, blur=0.5, n_iters=150), (x, y)
    )


def test_gradcheck_batched_and_weighted() -> None:
    gen = torch.Generator().manual_seed(17)
    x = torch.rand(2, 4, 2, generator=gen, dtype=F64, requires_grad=True)
    y = torch.rand(2, 4, 2, generator=gen, dtype=F64, requires_grad=True)
    a, b = _weights(4, 18), _weights(4, 19)
    assert torch.autograd.gradcheck(
        lambda u, v: sinkhorn_divergence(u, v, blur=0.5, n_iters=150, a=a, b=b), (x, y)
    )
    assert torch.autograd.gradcheck(lambda u, v: sinkhorn_ot(u, v, 0.25, 150, a=a, b=b)[0], (x, y))


def test_gradient_only_to_inputs_that_require_it() -> None:
    x, y = _clouds(6, 5)
    y.requires_grad_(True)
    sinkhorn_divergence(x, y).backward()
    assert x.grad is None and y.grad is not None and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("n_iters", [0, 30])
@pytest.mark.parametrize("batched", [False, True])
def test_gradient_of_one_input_equals_that_of_both(n_iters: int, batched: bool) -> None:
    """The solver skips the gradient of an input that does not require it (e.g. the teacher's
    cloud): same value, same gradient of the other input as when both require one."""
    x, y = _clouds(7, 5, seed=31)
    if batched:
        x, y = torch.stack([x, 1.5 * x]), torch.stack([y, y + 0.2])

    def grads(need_x: bool, need_y: bool):
        u, v = x.clone().requires_grad_(need_x), y.clone().requires_grad_(need_y)
        value = sinkhorn_divergence(u, v, blur=0.2, n_iters=n_iters)
        value.sum().backward()
        return value.detach(), u.grad, v.grad

    value, grad_x, grad_y = grads(True, True)
    value_y, none_x, only_y = grads(False, True)
    value_x, only_x, none_y = grads(True, False)
    assert none_x is None and none_y is None
    torch.testing.assert_close(value_y, value, rtol=0, atol=0)
    torch.testing.assert_close(value_x, value, rtol=0, atol=0)
    torch.testing.assert_close(only_y, grad_y, rtol=0, atol=0)
    torch.testing.assert_close(only_x, grad_x, rtol=0, atol=0)


def test_small_problems_run_on_one_thread_and_restore_the_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Below _SERIAL_MAX_ENTRIES the solver runs with one intra-op thread; the caller's count
    is restored afterwards, also when the solver raises."""
    seen: list[int] = []
    solve = sinkhorn_module._solve_scaling

    def recording(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return solve(*args, **kwargs)

    def failing(*args, **kwargs):
        raise RuntimeError("solver failed")

    monkeypatch.setattr(sinkhorn_module, "_solve_scaling", recording)
    limit = sinkhorn_module._SERIAL_MAX_ENTRIES
    x, y = _clouds(8, 6, seed=35)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = sinkhorn_divergence(x, y)
        monkeypatch.setattr(sinkhorn_module, "_SERIAL_MAX_ENTRIES", 0)
        parallel = sinkhorn_divergence(x, y)
        assert seen == [1, 2] and torch.get_num_threads() == 2
        torch.testing.assert_close(small, parallel, rtol=1e-12, atol=0)
        monkeypatch.setattr(sinkhorn_module, "_SERIAL_MAX_ENTRIES", limit)
        monkeypatch.setattr(sinkhorn_module, "_solve_scaling", failing)
        with pytest.raises(RuntimeError, match="solver failed"):
            sinkhorn_divergence(x, y)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("kernel_max", "absorbed"),
    [(0.0, None), (None, 1e-3), (0.0, 1e-3)],
    ids=["no-kernel-steps", "absorbed-refused", "log-domain-only"],
)
def test_epsilon_scaling_fallbacks_keep_the_iterates(
    monkeypatch: pytest.MonkeyPatch, kernel_max: float | None, absorbed: float | None
) -> None:
    """Epsilon-scaling steps moved from the kernel exp(-C / eps) or the absorbed kernel to
    the log domain give the same value and gradients (float64, unequal sizes, weights)."""
    x, y = _clouds(9, 6, d=3, seed=32)
    a, b = _weights(9, 33), _weights(6, 34)
    x.requires_grad_(True)
    y.requires_grad_(True)
    ref = sinkhorn_divergence(x, y, blur=0.1, a=a, b=b)
    g_ref = torch.autograd.grad(ref, (x, y))
    if kernel_max is not None:
        monkeypatch.setattr(sinkhorn_module, "_KERNEL_MAX_LOG2", kernel_max)
    if absorbed is not None:
        monkeypatch.setattr(sinkhorn_module, "_ABSORBED_LOG2", absorbed)
    got = sinkhorn_divergence(x, y, blur=0.1, a=a, b=b)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=0)
    for g_got, g_want in zip(torch.autograd.grad(got, (x, y)), g_ref, strict=True):
        torch.testing.assert_close(g_got, g_want, rtol=0, atol=1e-12 * g_want.abs().max())


def _unrolled_divergence(x, y, eps: float, n_iters: int, a=None, b=None) -> torch.Tensor:
    """S_eps by ``n_iters`` alternating log-domain iterations written with plain autograd ops,
    so that backward differentiates through every iteration (the reference for the envelope
    gradient). Cost 1/2 |x - y|^2 from explicit differences."""
    la = (a if a is not None else _uniform(x.shape[0])).log()
    lb = (b if b is not None else _uniform(y.shape[0])).log()

    def ot(u, v, lu, lv):
        cost = 0.5 * (u.unsqueeze(1) - v.unsqueeze(0)).square().sum(-1)
        f = torch.zeros_like(lu)
        for _ in range(n_iters):
            g = -eps * torch.logsumexp(lu.unsqueeze(1) + (f.unsqueeze(1) - cost) / eps, dim=0)
            f = -eps * torch.logsumexp(lv.unsqueeze(0) + (g.unsqueeze(0) - cost) / eps, dim=1)
        return lu.exp() @ f + lv.exp() @ g

    return ot(x, y, la, lb) - 0.5 * (ot(x, x, la, la) + ot(y, y, lb, lb))


@pytest.mark.parametrize(
    ("n", "m", "blur", "n_iters", "weighted"),
    [(7, 7, 0.5, 300, False), (9, 6, 0.3, 600, True), (12, 12, 0.2, 1000, False)],
)
def test_envelope_gradient_matches_unrolled_gradient_at_convergence(
    n: int, m: int, blur: float, n_iters: int, weighted: bool
) -> None:
    """Our gradient (closed form from the last update, potentials held fixed) equals autograd
    through all iterations once they have converged: the envelope theorem."""
    x, y = _clouds(n, m, d=3, seed=31)
    a, b = (_weights(n, 32), _weights(m, 33)) if weighted else (None, None)
    x.requires_grad_(True)
    y.requires_grad_(True)
    ours = sinkhorn_divergence(x, y, blur=blur, n_iters=n_iters, a=a, b=b)
    ref = _unrolled_divergence(x, y, blur**2, n_iters, a, b)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-14)
    g_ours = torch.autograd.grad(ours, (x, y))
    g_ref = torch.autograd.grad(ref, (x, y))
    for got, want in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-10)


def test_envelope_gradient_differs_from_unrolled_before_convergence() -> None:
    """Far from convergence the two gradients differ: the comparison above is not vacuous."""
    x, y = _clouds(12, 12, d=3, seed=31)
    x.requires_grad_(True)
    ours = sinkhorn_divergence(x, y, blur=0.15, n_iters=3)
    ref = _unrolled_divergence(x, y, 0.15**2, 3)
    (g_ours,) = torch.autograd.grad(ours, x)
    (g_ref,) = torch.autograd.grad(ref, x)
    assert (g_ours - g_ref).abs().max() > 1e-3 * g_ref.abs().max()


@pytest.mark.parametrize("n_iters", [0, 400])
def test_structural_loss_gradient_reaches_the_student_only(n_iters: int) -> None:
    """Through the structural KD term: the student embedding gets the envelope gradient (equal
    to the unrolled one at convergence), the teacher embedding none."""
    gen = torch.Generator().manual_seed(35)
    z_t = torch.randn(8, 6, generator=gen, dtype=F64, requires_grad=True)
    z_s = torch.randn(8, 5, generator=gen, dtype=F64, requires_grad=True)
    structural_ot_loss(z_t, z_s, k=4, blur=0.5, n_iters=n_iters).backward()
    assert z_t.grad is None
    assert z_s.grad is not None and torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0
    if n_iters:
        z_ref = z_s.detach().clone().requires_grad_(True)
        with torch.no_grad():
            s_t = cosine_similarity_matrix(z_t)
            anchors = topk_anchor_indices(s_t, 4)
            rows_t = shift_nonnegative(s_t).gather(1, anchors)
        rows_s = shift_nonnegative(cosine_similarity_matrix(z_ref)).gather(1, anchors)
        _unrolled_divergence(rows_t, rows_s, 0.25, n_iters).backward()
        torch.testing.assert_close(z_s.grad, z_ref.grad, rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------ errors and devices
def test_invalid_arguments() -> None:
    x, y = _clouds(4, 4)
    with pytest.raises(ValueError, match="blur"):
        sinkhorn_divergence(x, y, blur=0)
    with pytest.raises(ValueError, match="scaling"):
        sinkhorn_divergence(x, y, scaling=1.0)
    with pytest.raises(ValueError, match="n_iters"):
        sinkhorn_divergence(x, y, n_iters=-1)
    with pytest.raises(ValueError, match="dimension"):
        sinkhorn_divergence(x, y[:, :2])
    with pytest.raises(ValueError, match="shape"):
        sinkhorn_divergence(x, y, a=torch.ones(3, dtype=F64) / 3)
    with pytest.raises(ValueError, match="n_iters"):
        sinkhorn_ot(x, y, 0.1, 0)
    with pytest.raises(ValueError, match="float32 or float64"):
        sinkhorn_divergence(x.half(), y.half())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    x, y = _clouds(32, 20, d=8)
    for n_iters in (0, 30):
        cpu = sinkhorn_divergence(x, y, n_iters=n_iters)
        gpu = sinkhorn_divergence(x.cuda(), y.cuda(), n_iters=n_iters)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12)
