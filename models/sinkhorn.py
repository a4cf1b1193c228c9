"""Log-domain entropic optimal transport and the debiased Sinkhorn divergence, in pure torch.

Conventions (those of geomloss, see METHOD.md Part 2, 4.4):

* cost ``C_ij = 1/2 |x_i - y_j|^2``, temperature ``eps = blur**2``;
* ``OT_eps(a, b) = min_pi <pi, C> + eps KL(pi | a x b)``, evaluated as the dual value
  ``<a, f> + <b, g>`` of the Sinkhorn potentials ``f`` (on the x_i) and ``g`` (on the y_j);
* ``S_eps(a, b) = OT_eps(a, b) - 1/2 OT_eps(a, a) - 1/2 OT_eps(b, b)``.

A Sinkhorn update is the soft-min ``f_i = -eps log sum_j b_j exp((g_j - C_ij) / eps)``.
The sub-problems (x, y), (x, x), (y, y) are stacked so that each update is one fused
log-sum-exp (in base 2) over a batch of cost matrices. Where it is safe, the same update
is a matrix-vector product on a kernel (fewer passes over memory, no exp per update):
``exp(-C / eps)`` in the coarse steps of epsilon-scaling, where ``C / eps`` is small; a
kernel into which the current potentials are absorbed (log-stabilized scaling) in its fine
steps and final update, and in the fixed-eps iterations after the first one. Every such
update is range-checked and falls back to the log domain whenever it would lose accuracy.
Epsilon-scaling follows geomloss's schedule and updates exactly. Small CPU problems run on
one intra-op thread (their many small ops gain nothing from being split).

The solver runs without autograd; its last update keeps its soft-max weights ``P``
(row-stochastic, held as a scaled kernel), which give the gradient of the envelope theorem
in closed form, e.g. ``d <a, f> / d x_i = a_i (x_i - sum_j P_ij y_j)`` (the gradient of the
last update differentiated with detached potentials, as geomloss does). Backward therefore
costs a few matrix products instead of unrolling the iterations. It is exact at convergence
and supports one backward pass (no double backward). Weights ``a`` and ``b`` are constants.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import lru_cache, partial
from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["sinkhorn_divergence", "sinkhorn_ot"]

# The soft-mins are computed in base 2 (exp2 is ~40% faster than exp on CPU). exp2() of
# arguments below about -126 takes a slow underflow path (~10x slower); terms below
# 2**-115 ~ 2e-35 of the row maximum cannot change a float32 or float64 sum, so exponents
# are floored there.
_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453
_EXP2_FLOOR = -115.0

# solve(x, y, want_grad) -> (outputs, grad_x, grad_y): outputs[0] is the differentiable
# value (P,); grad_x / grad_y are d value_p / d x_p and d value_p / d y_p, computed only
# where want_grad (a pair of bools, for x and y) asks for them (else None).
_Solver = Callable[
    [Tensor, Tensor, tuple[bool, bool]], tuple[tuple[Tensor, ...], Tensor | None, Tensor | None]
]


# ----------------------------------------------------------------------------- kernels
def _stacked_costs(us: list[Tensor], vs: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """Costs ``1/2 |u_i - v_j|^2`` of K pairs of (P, N, D), (P, M, D) clouds: (K, P, N, M).

    ``|u_i|^2 / 2 + |v_j|^2 / 2 - <u_i, v_j>`` by one batched matrix product. Also returns
    the stacked clouds U (K, P, N, D), V (K, P, M, D).
    """
    u, v = torch.stack(us), torch.stack(vs)
    k, p, n, d = u.shape
    m = v.shape[2]
    half_uu = u.square().sum(-1, keepdim=True).mul_(0.5)
    half_vv = v.square().sum(-1).mul_(0.5)
    base = (half_uu + half_vv.unsqueeze(-2)).view(k * p, n, m)
    v_t = v.view(k * p, m, d).transpose(1, 2)
    base.baddbmm_(u.view(k * p, n, d), v_t, alpha=-1.0)
    return base.view(k, p, n, m), u, v


def _log2_sum_exp2_(
    h2: Tensor,
    cost: Tensor,
    alpha: Tensor | float,
    out: Tensor,
    normalize: bool = False,
    dim: int = -1,
) -> Tensor:
    """``log2 sum_j 2 ** (h2_j - alpha * cost_ij)`` over axis ``dim`` (-1 or -2) of ``cost``.

    ``h2`` (..., M) for dim -1, (..., N) for dim -2; ``cost`` and ``out`` (the scratch)
    (..., N, M); a tensor ``alpha`` is shaped like the result, e.g. (1, P, 1). With
    ``normalize``, ``out`` holds the soft-max weights (summing to 1 along ``dim``).
    """
    h2 = h2.unsqueeze(-1 - (dim == -1))
    if isinstance(alpha, Tensor):
        torch.addcmul(h2, cost, alpha.unsqueeze(-1), value=-1.0, out=out)
    else:
        torch.sub(h2, cost, alpha=alpha, out=out)
    m = out.amax(dim=dim, keepdim=True)
    out.sub_(m).clamp_(min=_EXP2_FLOOR).exp2_()
    total = out.sum(dim, keepdim=True)
    if normalize:
        out.div_(total)
    return total.log2_().add_(m).squeeze(dim)


def _softmin_(
    log2_w: Tensor,
    pot: Tensor,
    cost: Tensor,
    eps: Tensor | float,
    out: Tensor,
    normalize: bool = False,
    dim: int = -1,
) -> Tensor:
    """Sinkhorn update ``-eps log sum_j w_j exp((pot_j - cost_ij) / eps)`` (no grad).

    ``log2_w`` are the base-2 log-weights ``log2(w_j)`` of the points summed over, those of
    axis ``dim`` of ``cost`` (-1: the update of the rows' potential, -2: of the columns').
    """
    alpha = _LOG2E / eps
    h2 = _add_scaled(log2_w, pot, alpha)
    return _log2_sum_exp2_(h2, cost, alpha, out, normalize, dim).mul_(-_LN2 * eps)


def _add_scaled(x: Tensor, y: Tensor, c: Tensor | float) -> Tensor:
    """``x + c y`` for a number or a (broadcastable) tensor ``c``."""
    return torch.addcmul(x, y, c) if isinstance(c, Tensor) else torch.add(x, y, alpha=c)


def _kernel_(cost: Tensor, eps: Tensor | float, out: Tensor) -> Tensor:
    """The kernel ``exp(-C / eps) = 2 ** (-alpha C)`` into ``out``."""
    return torch.mul(cost, -_LOG2E / eps, out=out).exp2_()


class _SoftmaxWeights:
    """Row-stochastic soft-max weights ``diag(row) mat diag(col)`` of a Sinkhorn update.

    ``mat`` (..., N, M) may be a view (e.g. a transposed kernel); ``row`` (..., N, 1) and
    ``col`` (..., M, 1) are None where they are 1 (``mat`` then holds the weights themselves).
    """

    def __init__(self, mat: Tensor, row: Tensor | None = None, col: Tensor | None = None):
        self.mat, self.row, self.col = mat, row, col

    def __getitem__(self, index: int | slice) -> _SoftmaxWeights:
        row = None if self.row is None else self.row[index]
        col = None if self.col is None else self.col[index]
        return _SoftmaxWeights(self.mat[index], row, col)

    def __matmul__(self, z: Tensor) -> Tensor:
        """``P @ z`` for z (..., M, D), without forming P (a transposed view: ``(z^T P^T)^T``
        runs up to twice as fast for small D)."""
        if self.col is not None:
            z = self.col * z
        out = (z.mT @ self.mat.mT).mT
        return out if self.row is None else out.mul_(self.row)


# Problems whose four stacked (P, N, M) cost blocks hold at most this many entries are solved
# on one CPU thread: torch splits each op on more than 32768 elements into parallel chunks,
# and for the ~200 small ops of such a solve, waking and joining the other threads (and their
# spinning) costs more than the chunks save; a loaded machine can stall them further.
_SERIAL_MAX_ENTRIES = 2**17  # B = 128: 65536; B = 256 (262144) stays parallel


@contextlib.contextmanager
def _one_thread_if_small(x: Tensor, y: Tensor) -> Iterator[None]:
    """Limit torch's intra-op threads to one while solving small CPU problems (x, y)."""
    threads = torch.get_num_threads()
    entries = 4 * x.shape[0] * x.shape[1] * y.shape[1]
    if threads == 1 or x.device.type != "cpu" or entries > _SERIAL_MAX_ENTRIES:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _EnvelopeFunction(torch.autograd.Function):
    """Runs a no-grad solver and back-propagates the gradients it computed in closed form."""

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, solve: _Solver) -> tuple[Tensor, ...]:
        with _one_thread_if_small(x, y):
            outputs, grad_x, grad_y = solve(x, y, tuple(ctx.needs_input_grad[:2]))
        ctx.save_for_backward(grad_x, grad_y)
        ctx.mark_non_differentiable(*outputs[1:])
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_value: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        grad_x, grad_y = ctx.saved_tensors
        scale = grad_value.view(-1, 1, 1)
        gx = scale * grad_x if ctx.needs_input_grad[0] else None
        gy = scale * grad_y if ctx.needs_input_grad[1] else None
        return gx, gy, None


# ----------------------------------------------------------------------------- inputs
def _as_batch(x: Tensor, name: str) -> Tensor:
    """View a cloud as (P, N, D), P = 1 for an unbatched (N, D) input."""
    if x.dim() == 2:
        return x.unsqueeze(0)
    if x.dim() == 3:
        return x
    raise ValueError(f"{name} must have shape (N, D) or (P, N, D), got {tuple(x.shape)}")


def _check_clouds(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, bool]:
    """Validate two clouds; return them as (P, N, D), (P, M, D) and whether they were batched."""
    if x.dim() != y.dim():
        raise ValueError(f"x and y must both be batched or not: {tuple(x.shape)}, {tuple(y.shape)}")
    x3, y3 = _as_batch(x, "x"), _as_batch(y, "y")
    if x3.shape[0] != y3.shape[0] or x3.shape[-1] != y3.shape[-1]:
        raise ValueError(
            f"x and y disagree on batch or dimension: {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x3.shape[1] == 0 or y3.shape[1] == 0:
        raise ValueError("x and y must hold at least one point each")
    if x3.dtype not in (torch.float32, torch.float64) or x3.dtype != y3.dtype:
        raise ValueError(f"x and y must both be float32 or float64, got {x3.dtype}, {y3.dtype}")
    if x3.device != y3.device:
        raise ValueError(f"x and y are on different devices: {x3.device}, {y3.device}")
    return x3, y3, x.dim() == 3


def _log_weights(w: Tensor | None, like: Tensor, name: str) -> Tensor:
    """Log-weights (P, N) for a cloud ``like`` (P, N, D); uniform when ``w`` is None."""
    p, n = like.shape[:2]
    if w is None:
        return torch.full((p, n), -math.log(n), dtype=like.dtype, device=like.device)
    w = w.detach().to(dtype=like.dtype, device=like.device)
    if w.shape not in ((n,), (p, n)):
        raise ValueError(f"{name} must have shape ({n},) or ({p}, {n}), got {tuple(w.shape)}")
    return torch.log(w).expand(p, n).contiguous()


def _pad_points(x: Tensor, log_w: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Pad a cloud to n points with zero-weight copies of its first point (never transported;
    inside the bounding box of the data, so the cost bounds of the schedule still hold)."""
    extra = n - x.shape[1]
    if extra == 0:
        return x, log_w
    x = torch.cat([x, x[:, :1].detach().expand(-1, extra, -1)], dim=1)
    log_w = torch.cat([log_w, log_w.new_full((log_w.shape[0], extra), -math.inf)], dim=1)
    return x, log_w


# ----------------------------------------------------------------------------- schedule
def _blur_schedules(x: Tensor, y: Tensor, blur: float, scaling: float) -> list[list[float]]:
    """Per problem, geomloss's blurs ``d, d, d s, d s^2, ... (> blur), blur`` (``d`` twice: the
    initial update and the first damped step), with ``d`` the diagonal of the bounding box of
    both clouds (an upper bound on their diameter) and ``s = scaling``; ``d = blur`` if the
    points coincide (any temperature then gives the same result)."""
    lo, hi = torch.aminmax(torch.cat([x, y], dim=1), dim=1)
    schedules = []
    diagonals = torch.linalg.vector_norm(hi - lo, dim=-1).tolist()  # one host sync
    for d in diagonals:
        seq = [d if d > 0 else blur]
        s = d
        while s > blur:
            seq.append(s)
            s *= scaling
        schedules.append(seq + [blur])
    return schedules


# An epsilon-scaling step whose exponents alpha C (alpha = log2(e) / eps) stay below this for
# every pair of points runs as matrix-vector products on the kernel 2 ** (-alpha C), which
# can then neither underflow nor overflow: fewer passes over the cost matrices than the log
# domain. This covers the first, coarse steps of the schedule.
_KERNEL_MAX_LOG2 = 60.0


class _Step(NamedTuple):
    """One temperature of the epsilon-scaling schedule."""

    eps: Tensor | float  # a float, or (K P, 1, 1) when the problems of a batch differ
    waiting: Tensor | None  # (K P, 1, 1) problems still waiting for their schedule, or None
    kernel: bool  # run in the kernel (scaling) domain
    key: tuple[float, ...]  # the temperatures, to reuse a kernel


def _eps_steps(blurs: list[list[float]], like: Tensor, k: int) -> list[_Step]:
    """The steps of per-problem schedules aligned on their last step (see _solve_scaling),
    per-problem values repeated for K stacked blocks of the P problems."""
    if all(seq == blurs[0] for seq in blurs[1:]):  # one schedule (e.g. P = 1): no tensors
        half_d2 = blurs[0][0] ** 2 / 2  # C <= d**2 / 2, d = the bounding-box diagonal
        return [
            _Step(b * b, None, _LOG2E / (b * b) * half_d2 <= _KERNEL_MAX_LOG2, (b * b,))
            for b in blurs[0]
        ]
    n_steps = max(len(seq) for seq in blurs)
    steps = []
    for t in range(n_steps):
        values = [seq[max(0, t - n_steps + len(seq))] ** 2 for seq in blurs]
        waiting = [t < n_steps - len(seq) for seq in blurs]
        eps: Tensor | float = values[0]
        if len(set(values)) > 1:
            eps = torch.tensor(values * k, dtype=like.dtype).to(like.device).view(-1, 1, 1)
        mask = None
        if any(waiting):
            mask = torch.tensor(waiting * k).to(like.device).view(-1, 1, 1)
        # C <= d**2 / 2 for the bounding-box diagonal d = seq[0] (or blur >= d)
        kernel = all(
            _LOG2E / e * seq[0] ** 2 / 2 <= _KERNEL_MAX_LOG2
            for e, seq in zip(values, blurs, strict=True)
        )
        steps.append(_Step(eps, mask, kernel, tuple(values)))
    return steps


def _quartered(before: tuple[float, ...], after: tuple[float, ...]) -> bool:
    """Whether every temperature was divided by 4 (the default scaling 0.5 of the blur)."""
    return all(abs(b - 4 * a) <= 1e-9 * b for b, a in zip(before, after, strict=True))


@lru_cache(maxsize=16)
def _block_signs(p: int, device: torch.device) -> Tensor:
    """The sign of the rows' potential of each cost block (x, x), (x, y), (y, x), (y, y) of P
    problems in S_eps, (4 P, 1, 1). Cached: a small tensor fewer to build per call."""
    return torch.tensor([-1.0, 1.0, 1.0, -1.0]).repeat_interleave(p).view(-1, 1, 1).to(device)


def _transposed(t: Tensor, p: int) -> Tensor:
    """A view (2, 2, P, -1) of per-block values t (4 P, ...), blocks (a, b) (cost blocks
    (x, x), (x, y), (y, x), (y, y)), holding at (a, b) the values of block (b, a)."""
    return t.view(2, 2, p, -1).transpose(0, 1)


def _kernel_log2_sums(
    log2_wn: Tensor, pot: Tensor | None, alpha: Tensor | float, kernel: Tensor, p: int
) -> Tensor:
    """The soft-mins of all blocks on the kernel ``K = 2 ** (-alpha C)``, for small alpha C, in
    units of ``-eps ln 2``: ``log2 sum_j w_j 2 ** (alpha pot'_j) K_ij``, as (2, 2, P, M).

    The blocks (4 P, N, M) are closed under transposition: the potential ``pot`` (4 P, 1, N)
    of block (a, b)'s rows, with the log-weights ``log2_wn`` of those rows, is the input
    ``pot'`` of the update of block (b, a), a row vector times block (a, b). None: zeros.
    """
    h2 = log2_wn if pot is None else _add_scaled(log2_wn, pot, alpha)
    top = h2.amax(dim=-1, keepdim=True)
    w = torch.sub(h2, top).exp2_()  # in [0, 1]; the largest term of each sum is >= 2**-60
    return _transposed(torch.bmm(w, kernel).log2_().add_(top), p)


class _AbsorbedKernel:
    """Soft-mins on a kernel that absorbs the potentials (log-stabilized scaling).

    ``K = 2 ** (alpha (p_i + q_j - C_ij))``, ``alpha = log2(e) / eps``, is built in a buffer
    for the row potentials ``p`` (4 P, 1, N) of the cost blocks of :func:`_solve_scaling`,
    whose column potentials ``q`` are those of the transposed blocks; the soft-min of any
    ``q'`` is then ``p - eps ln sum_j w'_j K_ij`` with ``w' = w 2 ** (alpha (q' - q))``: one
    matrix-vector product instead of the passes of the log domain. It is refused (None)
    unless the sums lie within ``2**(+-_ABSORBED_LOG2)`` and ``w' <= w 2**_ABSORBED_LOG2``,
    where entries of K raised to the exponent floor cannot matter.
    """

    def __init__(self, cost: Tensor, buf: Tensor, w: Tensor, p: int):
        self.cost, self.kernel, self.w = cost, buf, w  # cost, buf (4 P, N, M); w (4 P, 1, M)
        self.blocks = buf.view(2, 2, p, *buf.shape[1:])  # (a, b, P, N, M)
        self.n_problems, self.valid = p, False

    def build(self, p: Tensor, eps: Tensor | float) -> None:
        """Compute K for row potentials p (4 P, 1, N)."""
        alpha = _LOG2E / eps
        if isinstance(alpha, Tensor):  # (4 P, 1, 1): problems at different temperatures
            torch.sub(p.mT, self.cost, out=self.kernel)
            self.blocks.add_(_transposed(p, self.n_problems).unsqueeze(-2))
            self.kernel.mul_(alpha)
        else:
            p_alpha = p * alpha
            torch.sub(p_alpha.mT, self.cost, alpha=alpha, out=self.kernel)
            self.blocks.add_(_transposed(p_alpha, self.n_problems).unsqueeze(-2))
        self.kernel.clamp_(min=_EXP2_FLOOR).exp2_()
        self.p, self.alpha, self.valid = p, alpha, True

    def sums(self, p: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
        """``s = K w'`` (4 P, 1, N) and ``w'`` (4 P, 1, M) for row potentials p (the column
        potentials being those of the transposed blocks; None: those of the build), or None
        if refused. The soft-min is ``p_build - eps ln s``; its soft-max weights
        ``diag(1 / s) K diag(w')``.
        """
        bound = 2.0**_ABSORBED_LOG2
        w = self.w
        if p is not None:
            shift = (p - self.p).mul_(self.alpha)
            if not shift.amax().item() <= _ABSORBED_LOG2:  # NaN: refused
                return None
            shift = _transposed(shift.exp2_(), self.n_problems)
            w = torch.mul(w.view(shift.shape), shift).view_as(w)
        sums = torch.bmm(w, self.kernel.mT)
        lo, hi = (t.item() for t in torch.aminmax(sums))
        if not 1.0 / bound <= lo <= hi <= bound:
            return None
        return sums, w


# A sum of the absorbed kernel must lie within 2**(+-this) (see _AbsorbedKernel).
_ABSORBED_LOG2 = 40.0


# ----------------------------------------------------------------------------- solvers
def _solve_scaling(
    x: Tensor,
    y: Tensor,
    want_grad: tuple[bool, bool],
    *,
    la: Tensor,
    lb: Tensor,
    blurs: list[list[float]],
) -> tuple[tuple[Tensor], Tensor | None, Tensor | None]:
    """S_eps by epsilon-scaling: damped symmetric updates, then one full update at blur**2.

    The cost blocks (x, x), (x, y), (y, x), (y, y) of the P problems are stacked (4 P, N, M)
    with the potentials of their rows (4 P, 1, N): f_aa, f_ab (on x), g_ab, g_bb (on y); the
    input of the update of block (a, b) is the potential of block (b, a), a view.
    Problem p starts at eps = d_p**2 and waits, unchanged, until the steps left equal the
    length of its own schedule, so a batched call equals a loop over the problems.
    The coarse steps run on the kernel ``exp(-C / eps)``; the fine ones on a kernel absorbing
    the current potentials (falling back to the log domain when it must), which the final
    update, at the same temperature as the last step, reuses.
    """
    cost, _, v = _stacked_costs([x, x, y, y], [x, y, x, y])
    k, p, n, m = cost.shape
    cost, v = cost.view(k * p, n, m), v.view(k * p, m, -1)
    log_w = torch.stack([la, lb, la, lb]).view(k * p, 1, m)  # of the points summed over
    log2_w = log_w * _LOG2E
    log2_wn = torch.stack([la, la, lb, lb]).view(k * p, 1, n).mul_(_LOG2E)  # of the rows'
    buf = torch.empty_like(cost)
    absorbed = _AbsorbedKernel(cost, buf, log_w.exp(), p)
    steps = _eps_steps(blurs, x, k)
    kernel_key = None  # temperatures of the kernel exp(-C / eps) held in buf

    def log_domain(pot: Tensor, eps: Tensor | float, normalize: bool = False) -> Tensor:
        """The soft-mins of all blocks in the log domain, for row potentials pot (4 P, 1, N)."""
        e = eps.view(-1, 1) if isinstance(eps, Tensor) else eps
        pot_in = _transposed(pot, p).reshape(-1, m)
        new = _softmin_(log2_w.view(-1, m), pot_in, cost, e, buf, normalize)
        return new.view(-1, 1, n)

    def damped(step: _Step, pot: Tensor) -> Tensor:
        """``(pot + softmin(pot_in)) / 2``: the symmetric, damped update of a step."""
        nonlocal kernel_key
        if not step.kernel:
            kernel_key = None
            absorbed.build(pot, step.eps)
            result = absorbed.sums()
            if result is not None:  # softmin = pot - eps ln s
                return _add_scaled(pot, result[0].log2_(), -0.5 * _LN2 * step.eps)
            absorbed.valid = False
            return pot.lerp(log_domain(pot, step.eps), 0.5)
        absorbed.valid = False
        if kernel_key != step.key:
            if kernel_key is not None and _quartered(kernel_key, step.key):
                buf.square_().square_()  # exp(-C / (eps / 4)) = exp(-C / eps) ** 4: no exp
            else:
                _kernel_(cost, step.eps, buf)
            kernel_key = step.key
        log2_sums = _kernel_log2_sums(log2_wn, pot, _LOG2E / step.eps, buf, p)
        scale = -_LN2 * step.eps
        if isinstance(scale, Tensor):
            scale = scale.view(2, 2, p, 1)
        return _add_scaled(pot.view(log2_sums.shape), log2_sums, scale).view_as(pot).mul_(0.5)

    first = steps[0]
    if first.kernel:  # always, as eps >= diameter**2 there
        _kernel_(cost, first.eps, buf)
        kernel_key = first.key
        log2_sums = _kernel_log2_sums(log2_wn, None, 0.0, buf, p)
        pot = log2_sums.reshape(-1, 1, n).mul_(-_LN2 * first.eps)
    else:
        pot = log_domain(torch.zeros_like(log2_wn), first.eps)
    for step in steps:
        new = damped(step, pot)
        pot = new if step.waiting is None else torch.where(step.waiting, pot, new)
    # the final, undamped update at eps = blur**2, the temperature of the last step
    eps = blurs[0][-1] ** 2
    result = absorbed.sums(pot) if absorbed.valid else None
    if result is None:
        absorbed.build(pot, eps)
        result = absorbed.sums()
    if result is not None:
        sums, w = result
        pot = torch.add(absorbed.p, sums.log2(), alpha=-_LN2 * eps)
        weights = _SoftmaxWeights(buf, sums.reciprocal_().mT, w.mT)
    else:
        pot = log_domain(pot, eps, normalize=True)
        weights = _SoftmaxWeights(buf)
    value = log2_wn.exp2().mul_(_block_signs(p, x.device)).mul_(pot).view(k, p, n).sum((0, 2))
    # soft-max weights P of the last update: d S / d x = a (P_xx x - P_xy y), etc.; a and b
    # are the column weights of the blocks (x, x) and (y, y)
    grads: list[Tensor | None] = [None, None]
    lo, hi = (0 if want_grad[0] else 2), (4 if want_grad[1] else 2)
    if lo < hi:
        moved = (weights[lo * p : hi * p] @ v[lo * p : hi * p]).view(hi - lo, p, n, -1)
        for c, (own, cross) in enumerate([(0, 1), (3, 2)]):
            if want_grad[c]:
                w_c = absorbed.w[own * p : (own + 1) * p].mT
                grads[c] = w_c * (moved[own - lo] - moved[cross - lo])
    return (value,), grads[0], grads[1]


class _ScalingDomain:
    """Sinkhorn iterations as matrix-vector products: log-stabilized scaling (absorption).

    The potentials ``f0, g0`` are absorbed into ``K = exp((f0_i + g0_j - C_ij) / eps)``; the
    current potentials are ``f = f0 - eps ln s_f`` and ``g = g0 - eps ln s_g``, where an
    update computes ``s_g = (a / s_f) K`` then ``s_f = K (b / s_g)`` - the iterates of the log
    domain, for the price of two matrix-vector products instead of two passes of exp.

    Updates run in blocks of ``_BLOCK`` with one range check (a host sync) per block. A block
    with a sum outside ``2**(+-_ACCEPT_LOG2)``, where entries raised to the exponent floor of K
    could matter, is discarded and redone on a kernel that absorbs the current potentials,
    then one update at a time; an update that fails on a fresh kernel ends the run. After a
    block whose sums leave ``2**(+-_ABSORB_LOG2)`` the potentials are absorbed at once.
    """

    _ACCEPT_LOG2 = 40.0
    _ABSORB_LOG2 = 30.0
    _BLOCK = 4

    def __init__(
        self, cost: Tensor, f: Tensor, g: Tensor, a: Tensor, b: Tensor, eps: float, buf: Tensor
    ):
        """cost and buf, the buffer for K: (..., N, M); f, a: (..., N); g, b: (..., M)."""
        n, m = cost.shape[-2:]
        self.shape_f, self.shape_g = f.shape, g.shape
        self.cost = cost.reshape(-1, n, m)
        self.a, self.b = a.reshape(-1, 1, n), b.reshape(-1, 1, m)
        self.f0, self.g0, self.eps = f, g, eps
        self.kernel = buf.view(-1, n, m)
        self._absorb()

    def _absorb(self) -> None:
        alpha = _LOG2E / self.eps
        n, m = self.cost.shape[-2:]
        # exponents floored at -115: with sums within 2**(+-40), floored entries change a sum
        # by a factor of at most 1 + 2**(2 * 40 - 115) = 1 + 2**-35
        torch.sub((self.f0 * alpha).reshape(-1, n, 1), self.cost, alpha=alpha, out=self.kernel)
        self.kernel.add_((self.g0 * alpha).reshape(-1, 1, m)).clamp_(min=_EXP2_FLOOR).exp2_()
        self.a_u = self.a  # a / s_f with s_f = 1
        self.sum_f: Tensor | None = None  # None: all 1
        self.sum_g: Tensor | None = None

    def _reabsorb(self) -> None:
        self.f0, self.g0 = self.potentials()
        self._absorb()

    def _block(self, n_updates: int) -> tuple[float, float] | None:
        """``n_updates`` updates; the range of their sums, or None (and no change) if rejected."""
        bound = 2.0**self._ACCEPT_LOG2
        kernel, kernel_t, a, b = self.kernel, self.kernel.transpose(1, 2), self.a, self.b
        a_u, sums = self.a_u, []
        for _ in range(n_updates):
            a_prev = a_u
            sum_g = torch.bmm(a_u, kernel)
            b_v = torch.div(b, sum_g)
            sum_f = torch.bmm(b_v, kernel_t)
            a_u = torch.div(a, sum_f)
            sums += [sum_f, sum_g]
        lo, hi = (t.item() for t in torch.aminmax(torch.cat(sums, dim=-1)))
        if not 1.0 / bound <= lo <= hi <= bound:  # NaN: rejected
            return None
        self.a_prev, self.b_v = a_prev, b_v  # the weights of the last update, see weights()
        self.sum_f, self.sum_g, self.a_u = sum_f, sum_g, a_u
        return lo, hi

    def run(self, n_updates: int) -> int:
        """Up to ``n_updates`` updates, each of g then f; returns how many were accepted."""
        done, block = 0, self._BLOCK
        while done < n_updates:
            n = min(block, n_updates - done)
            extent = self._block(n)
            if extent is None:
                if self.sum_f is not None:  # retry on a fresh kernel
                    self._reabsorb()
                elif n > 1:  # already fresh: find the update that fails
                    block = 1
                else:
                    return done
                continue
            done += n
            lo, hi = extent
            if (
                done < n_updates
                and not 2.0**-self._ABSORB_LOG2 <= lo <= hi <= 2.0**self._ABSORB_LOG2
            ):
                self._reabsorb()
        return done

    def potentials(self) -> tuple[Tensor, Tensor]:
        """The current potentials (f, g)."""
        if self.sum_f is None or self.sum_g is None:
            return self.f0, self.g0
        f = self.f0 - self.eps * self.sum_f.log().view(self.shape_f)
        g = self.g0 - self.eps * self.sum_g.log().view(self.shape_g)
        return f, g

    def weights(self) -> tuple[_SoftmaxWeights, _SoftmaxWeights]:
        """Soft-max weights of the last f update (..., N, M) and g update (..., M, N):
        ``diag(1 / s_f) K diag(b / s_g)`` and ``diag(1 / s_g) K^T diag(a / s_f')``, where
        ``s_f'`` are the sums before that update. Valid until the next absorption."""
        assert self.sum_f is not None and self.sum_g is not None
        kernel = self.kernel.view(*self.shape_f, -1)
        shape_f, shape_g = (*self.shape_f, 1), (*self.shape_g, 1)
        w_f = _SoftmaxWeights(kernel, self.sum_f.reciprocal().view(shape_f), self.b_v.view(shape_g))
        w_g = _SoftmaxWeights(
            kernel.transpose(-1, -2),
            self.sum_g.reciprocal().view(shape_g),
            self.a_prev.view(shape_f),
        )
        return w_f, w_g


# A log-domain iteration that moves every potential by less than this (in units of eps log 2)
# is followed by scaling-domain updates; so is the first one (whose move is from the starting
# point, not a sign of the next ones) unless this is <= 0, which keeps to the log domain.
_SWITCH_LOG2 = 10.0


def _alternate(
    cost_f: Tensor,
    log_wf: Tensor,
    log_wg: Tensor,
    eps: float,
    n_iters: int,
    w_f: Tensor,
    w_g: Tensor,
) -> tuple[Tensor, Tensor, _SoftmaxWeights, _SoftmaxWeights]:
    """``n_iters`` plain Sinkhorn iterations from unit scalings, each updating g then f.

    ``f`` lives on the rows of ``cost_f`` (..., N, M) and sums over its columns with
    log-weights ``log_wf`` (weights ``w_f``); ``g`` on its columns, summing over rows with
    ``log_wg`` (``w_g``). These are the iterates of POT's ``sinkhorn_log``. The first
    iteration runs in the log domain, the next ones in the scaling domain (much cheaper, see
    :class:`_ScalingDomain`), falling back to the log domain whenever they must. Returns f, g
    and the row-stochastic soft-max weights of the last f update (..., N, M) and of the last
    g update (..., M, N).
    """
    # scratch of the f and g updates (g's by columns); buf_f also holds the scaling domain's
    # kernel, which is dropped before any log-domain update
    buf_f, buf_g = torch.empty_like(cost_f), torch.empty_like(cost_f)
    log2_wf, log2_wg = log_wf * _LOG2E, log_wg * _LOG2E
    # POT starts from unit scalings, u = log a + f / eps = 0; zero-weight points keep u = -inf
    f = torch.where(torch.isfinite(log_wg), -eps * log_wg, 0.0)
    g: Tensor | None = None
    scaling: _ScalingDomain | None = None
    done = 0
    while done < n_iters:
        if scaling is not None:
            done += scaling.run(n_iters - done)
            if done == n_iters:
                break
            f, g = scaling.potentials()
            scaling = None
        last = done == n_iters - 1
        f_prev, g_prev = f, g
        g = _softmin_(log2_wg, f, cost_f, eps, buf_g, normalize=last, dim=-2)
        f = _softmin_(log2_wf, g, cost_f, eps, buf_f, normalize=last)
        done += 1
        if last or _SWITCH_LOG2 <= 0:
            continue
        if g_prev is not None:
            moved = torch.maximum((f - f_prev).abs().amax(), (g - g_prev).abs().amax())
            if moved.item() * _LOG2E / eps >= _SWITCH_LOG2:
                continue
        scaling = _ScalingDomain(cost_f, f, g, w_g, w_f, eps, buf_f)
    assert g is not None
    if scaling is not None:  # the last update was a scaling-domain one
        f, g = scaling.potentials()
        return f, g, *scaling.weights()
    return f, g, _SoftmaxWeights(buf_f), _SoftmaxWeights(buf_g.transpose(-1, -2))


def _solve_fixed(
    x: Tensor,
    y: Tensor,
    want_grad: tuple[bool, bool],
    *,
    la: Tensor,
    lb: Tensor,
    eps: float,
    n_iters: int,
) -> tuple[tuple[Tensor], Tensor | None, Tensor | None]:
    """S_eps by ``n_iters`` alternating iterations at fixed eps on (x, x), (x, y), (y, y)."""
    cost_f, u, v = _stacked_costs([x, x, y], [x, y, y])
    log_wf = torch.stack([la, lb, lb])  # weights of the points f's soft-min sums over
    log_wg = torch.stack([la, la, lb])  # weights of the points g's soft-min sums over
    w_f, w_g = log_wf.exp(), log_wg.exp()
    f, g, p_f, p_g = _alternate(cost_f, log_wf, log_wg, eps, n_iters, w_f, w_g)
    ot = (w_g * f).sum(-1) + (w_f * g).sum(-1)  # (3, P)
    value = ot[1] - 0.5 * (ot[0] + ot[2])
    # p_f, p_g: soft-max weights of the last f and g updates of the problems; each problem's
    # value <a, f> + <b, g> has d / d u_i = a_i (u_i - P^f_i. v) through f (on the rows u)
    # and d / d v_j = b_j (v_j - P^g_j. u) through g (on the columns v). The gradient of x
    # takes P^f_aa x, P^f_ab y, P^g_aa x; that of y P^f_bb y, P^g_ab x, P^g_bb y: contiguous
    # blocks, one product each for f and for g.
    grad_x = grad_y = None
    if want_grad[0] or want_grad[1]:
        f_lo, f_hi = (0 if want_grad[0] else 2), (3 if want_grad[1] else 2)
        g_lo, g_hi = (0 if want_grad[0] else 1), (3 if want_grad[1] else 1)
        moved_f = p_f[f_lo:f_hi] @ v[f_lo:f_hi]
        moved_g = p_g[g_lo:g_hi] @ u[g_lo:g_hi]
        if want_grad[0]:
            moved = 0.5 * (moved_f[-f_lo] + moved_g[-g_lo]) - moved_f[1 - f_lo]
            grad_x = w_g[0].unsqueeze(-1) * moved
        if want_grad[1]:
            moved = 0.5 * (moved_f[2 - f_lo] + moved_g[2 - g_lo]) - moved_g[1 - g_lo]
            grad_y = w_g[2].unsqueeze(-1) * moved
    return (value,), grad_x, grad_y


def _solve_plain(
    x: Tensor,
    y: Tensor,
    want_grad: tuple[bool, bool],
    *,
    la: Tensor,
    lb: Tensor,
    eps: float,
    n_iters: int,
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor | None, Tensor | None]:
    """OT_eps(x, y) by ``n_iters`` alternating iterations; outputs value, <plan, C>, plan."""
    cost = _stacked_costs([x], [y])[0][0]
    a, b = la.exp(), lb.exp()
    f, g, p_f, p_g = _alternate(cost, lb, la, eps, n_iters, b, a)
    value = (a * f).sum(-1) + (b * g).sum(-1)
    log_plan = (la + f / eps).unsqueeze(-1) + (lb + g / eps).unsqueeze(-2) - cost / eps
    plan = log_plan.exp()
    transport_cost = (plan * cost).sum((-1, -2))
    grad_x = a.unsqueeze(-1) * (x - p_f @ y) if want_grad[0] else None
    grad_y = b.unsqueeze(-1) * (y - p_g @ x) if want_grad[1] else None
    return (value, transport_cost, plan), grad_x, grad_y


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    blur: float = 0.1,
    n_iters: int = 0,
    scaling: float = 0.5,
    a: Tensor | None = None,
    b: Tensor | None = None,
) -> Tensor:
    """Debiased Sinkhorn divergence between point clouds, cost 1/2 |x - y|^2, eps = blur**2.

    Args:
        x: (N, D) or batched (P, N, D) points of the first measure.
        y: (M, D) or (P, M, D) points of the second measure.
        blur: target blur; the entropic temperature is ``eps = blur**2``.
        n_iters: 0 for epsilon-scaling (the blur is annealed from the diameter of the data
            down to ``blur``, multiplied by ``scaling`` per step, with damped symmetric
            updates and a final extrapolation, as geomloss does); ``> 0`` for exactly that
            many plain alternating iterations at ``eps = blur**2`` (the iterates of POT's
            ``sinkhorn_log``, started from unit scalings ``u = v = 1``).
        scaling: ratio between successive blurs of the schedule, in (0, 1).
        a, b: optional non-negative weights (N,) / (M,) or (P, N) / (P, M), each summing to 1;
            uniform by default. They are constants for autograd.

    Returns:
        S_eps as a scalar, or (P,) for batched inputs. Differentiable (once) w.r.t. x and y.
    """
    if not blur > 0:
        raise ValueError(f"blur must be > 0, got {blur}")
    if not 0 < scaling < 1:
        raise ValueError(f"scaling must lie in (0, 1), got {scaling}")
    if n_iters < 0:
        raise ValueError(f"n_iters must be >= 0, got {n_iters}")
    x3, y3, batched = _check_clouds(x, y)
    la, lb = _log_weights(a, x3, "a"), _log_weights(b, y3, "b")
    n = max(x3.shape[1], y3.shape[1])  # unequal sizes: pad with zero-weight points
    xp, la = _pad_points(x3, la, n)
    yp, lb = _pad_points(y3, lb, n)
    if n_iters == 0:
        blurs = _blur_schedules(x3.detach(), y3.detach(), blur, scaling)
        solve = partial(_solve_scaling, la=la, lb=lb, blurs=blurs)
    else:
        solve = partial(_solve_fixed, la=la, lb=lb, eps=blur**2, n_iters=n_iters)
    (value,) = _EnvelopeFunction.apply(xp, yp, solve)
    return value if batched else value[0]


def sinkhorn_ot(
    x: Tensor,
    y: Tensor,
    eps: float,
    n_iters: int,
    a: Tensor | None = None,
    b: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Plain entropic OT (not debiased) by ``n_iters`` alternating Sinkhorn iterations.

    Same iterates as POT's ``ot.sinkhorn(a, b, C, reg=eps, method="sinkhorn_log",
    stopThr=0, numItermax=n_iters)`` with ``C_ij = 1/2 |x_i - y_j|^2``.

    Args:
        x: (N, D) or (P, N, D) points; y: (M, D) or (P, M, D) points.
        eps: entropic temperature (> 0).
        n_iters: number of iterations (>= 1), each updating g then f.
        a, b: optional weights as in :func:`sinkhorn_divergence`; uniform by default.

    Returns:
        ``value``: the dual value ``<a, f> + <b, g>`` (differentiable w.r.t. x and y, envelope
        gradients); ``transport_cost``: ``<plan, C>`` (what ``ot.sinkhorn2`` returns);
        ``plan``: (N, M) or (P, N, M). The last two are not differentiable.
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    if n_iters < 1:
        raise ValueError(f"n_iters must be >= 1, got {n_iters}")
    x3, y3, batched = _check_clouds(x, y)
    la, lb = _log_weights(a, x3, "a"), _log_weights(b, y3, "b")
    solve = partial(_solve_plain, la=la, lb=lb, eps=eps, n_iters=n_iters)
    value, transport_cost, plan = _EnvelopeFunction.apply(x3, y3, solve)
    if batched:
        return value, transport_cost, plan
    return value[0], transport_cost[0], plan[0]
