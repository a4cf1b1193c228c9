"""Task losses (CE, CCC) and the registry of named, weighted distillation terms.

A training objective is a mapping ``{term name: weight}`` over :data:`LOSS_TERMS`, e.g.
``{"task": 0.8, "ot": 0.2, "centroid": 0.2}`` for MT-PKDOT (METHOD.md Part 2, 4.8);
:func:`weighted_objective` returns the weighted total and each term's value for logging.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from models.structural_kd import centroid_loss, pkd_loss, structural_ot_loss

__all__ = [
    "LOSS_TERMS",
    "TASKS",
    "LossInputs",
    "ccc",
    "ccc_loss",
    "task_loss",
    "weighted_objective",
]

TASKS = ("classification", "regression")


def ccc(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Concordance correlation coefficient per output dimension over the (masked) batch.

    ``ccc = 2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))**2)`` with population
    (1/n) moments. Entries where ``mask`` is False (e.g. Aff-Wild2 frames labelled -5) are
    ignored, whatever their value. If both series are constant and equal, the coefficient
    is undefined and 0 is returned.

    Args:
        pred, target: (B, n_dims) or (B,) tensors.
        mask: optional bool tensor of the same shape, True where the label is valid.

    Returns:
        (n_dims,) tensor (shape (1,) for 1-D inputs).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}"
        )
    if pred.dim() == 1:
        pred, target = pred.unsqueeze(1), target.unsqueeze(1)
        mask = None if mask is None else mask.unsqueeze(1)
    if pred.dim() != 2:
        raise ValueError(f"pred must be (B, n_dims) or (B,), got {tuple(pred.shape)}")
    target = target.to(pred.dtype)
    if mask is None:
        mask = torch.ones_like(pred, dtype=torch.bool)
    elif mask.shape != pred.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(pred.shape)}")
    counts = mask.sum(dim=0)
    too_few = (counts < 2).nonzero().flatten().tolist()
    if too_few:
        raise ValueError(
            f"CCC needs >= 2 valid values per dimension; dimensions {too_few} have fewer"
        )
    n = counts.to(pred.dtype)
    p = torch.where(mask, pred, 0.0)
    t = torch.where(mask, target, 0.0)
    mean_p, mean_t = p.sum(0) / n, t.sum(0) / n
    dp = torch.where(mask, p - mean_p, 0.0)
    dt = torch.where(mask, t - mean_t, 0.0)
    var_p, var_t = (dp * dp).sum(0) / n, (dt * dt).sum(0) / n
    cov = (dp * dt).sum(0) / n
    denom = var_p + var_t + (mean_p - mean_t) ** 2
    return 2.0 * cov / denom.clamp_min(torch.finfo(denom.dtype).tiny)


def ccc_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over output dimensions of ``1 - ccc``."""
    return (1.0 - ccc(pred, target, mask)).mean()


def task_loss(pred: Tensor, target: Tensor, task: str, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy (``task="classification"``) or CCC loss (``task="regression"``).

    Classification: ``pred`` logits (B, C), ``target`` class indices (B,) (cast to long),
    optional ``mask`` (B,) bool selecting the samples to use. Regression: see :func:`ccc_loss`.
    """
    if task == "classification":
        if target.dim() != 1 or pred.dim() != 2 or pred.shape[0] != target.shape[0]:
            raise ValueError(
                f"classification needs logits (B, C) and class indices (B,), "
                f"got {tuple(pred.shape)} and {tuple(target.shape)}"
            )
        if mask is not None:
            pred, target = pred[mask], target[mask]
        return F.cross_entropy(pred, target.long())
    if task == "regression":
        return ccc_loss(pred, target, mask)
    raise ValueError(f"unknown task {task!r}; allowed values: {', '.join(map(repr, TASKS))}")


@dataclass
class LossInputs:
    """Everything a loss term may need for one batch.

    ``z_student`` / ``z_teacher`` are (B, D) embeddings for the distillation terms; ``topk``,
    ``topk_largest``, ``blur`` and ``sinkhorn_iters`` configure the structural OT term.
    """

    pred: Tensor
    target: Tensor
    task: str
    z_student: Tensor | None = None
    z_teacher: Tensor | None = None
    mask: Tensor | None = None
    topk: int = 30
    topk_largest: bool = False
    blur: float = 0.1
    sinkhorn_iters: int = 0


def _embeddings(inputs: LossInputs, term: str) -> tuple[Tensor, Tensor]:
    """The (teacher, student) embeddings, or a clear error naming the term that needs them."""
    for name in ("z_teacher", "z_student"):
        if getattr(inputs, name) is None:
            raise ValueError(f"loss term {term!r} needs LossInputs.{name}, got None")
    return inputs.z_teacher, inputs.z_student


def _task_term(inputs: LossInputs) -> Tensor:
    return task_loss(inputs.pred, inputs.target, inputs.task, inputs.mask)


def _ot_term(inputs: LossInputs) -> Tensor:
    z_teacher, z_student = _embeddings(inputs, "ot")
    return structural_ot_loss(
        z_teacher,
        z_student,
        k=inputs.topk,
        blur=inputs.blur,
        largest=inputs.topk_largest,
        n_iters=inputs.sinkhorn_iters,
    )


def _centroid_term(inputs: LossInputs) -> Tensor:
    return centroid_loss(*_embeddings(inputs, "centroid"))


def _pkd_term(inputs: LossInputs) -> Tensor:
    return pkd_loss(*_embeddings(inputs, "pkd"))


LOSS_TERMS: dict[str, Callable[[LossInputs], Tensor]] = {
    "task": _task_term,
    "ot": _ot_term,
    "centroid": _centroid_term,
    "pkd": _pkd_term,
}


def weighted_objective(
    weights: Mapping[str, float], inputs: LossInputs
) -> tuple[Tensor, dict[str, float]]:
    """``sum_name weight * LOSS_TERMS[name](inputs)`` over the terms with a non-zero weight.

    Returns the total (a scalar tensor to back-propagate) and each computed term's
    unweighted value as a python float, for logging. Weights must be finite and >= 0.
    """
    unknown = sorted(set(weights) - set(LOSS_TERMS))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; registered: {sorted(LOSS_TERMS)}")
    for name, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight of loss term {name!r} must be finite and >= 0, got {weight}")
    active = {name: float(w) for name, w in weights.items() if w != 0}
    if not active:
        raise ValueError("weighted_objective needs at least one loss term with a non-zero weight")
    total: Tensor | None = None
    logged: dict[str, float] = {}
    # Losses (Sinkhorn above all) run in float32 even when the model ran under autocast.
    with torch.autocast(device_type=inputs.pred.device.type, enabled=False):
        inputs = _float32(inputs)
        for name, weight in active.items():
            value = LOSS_TERMS[name](inputs)
            logged[name] = float(value.detach())
            total = weight * value if total is None else total + weight * value
    return total, logged


def _float32(inputs: LossInputs) -> LossInputs:
    """Reduced-precision predictions and embeddings (autocast) cast up to float32."""

    def up(x: Tensor | None) -> Tensor | None:
        return x.float() if x is not None and x.dtype in (torch.float16, torch.bfloat16) else x

    return replace(
        inputs, pred=up(inputs.pred), z_student=up(inputs.z_student), z_teacher=up(inputs.z_teacher)
    )
