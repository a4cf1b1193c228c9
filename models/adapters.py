"""Adapters and the self-distillation alignment loss of the teacher pool (METHOD 4.6)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class Adapter(nn.Module):
    """dim -> hidden -> dim; two linear layers (as the reference), optional nonlinearity."""

    def __init__(self, dim: int, hidden: int, activation: str | None = None) -> None:
        super().__init__()
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; allowed: None, {', '.join(_ACTIVATIONS)}"
            )
        act = nn.Identity() if activation is None else _ACTIVATIONS[activation]()
        self.net = nn.Sequential(nn.Linear(dim, hidden), act, nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def cosine_misalignment(adapted: Tensor, z: Tensor) -> Tensor:
    """(M,) per-modality mean_i (1 - cos(adapted[m, i], z_i)); adapted (M,B,D), z (B,D)."""
    if adapted.ndim != 3 or z.ndim != 2 or adapted.shape[1:] != z.shape:
        raise ValueError(
            f"expected adapted (M, B, D) and z (B, D), got {tuple(adapted.shape)}, {tuple(z.shape)}"
        )
    cos = F.cosine_similarity(adapted, z.unsqueeze(0).expand_as(adapted), dim=-1, eps=1e-8)
    return (1.0 - cos).mean(dim=1)


def alignment_loss(
    adapted: Tensor, z: Tensor, joint_task_loss: Tensor, head_task_losses: Tensor
) -> Tensor:
    """Self-distillation loss generalised to M modalities (reference for M = 2).

    1/2 * sum_m mean_i (1 - cos(adapted[m, i], z_i)) + 1/2 * (joint + mean_m head_m).
    z is not detached: the joint teacher is pulled toward the adapted features too.
    """
    if head_task_losses.ndim != 1 or head_task_losses.shape[0] != adapted.shape[0]:
        raise ValueError(
            f"head_task_losses must have shape ({adapted.shape[0]},), "
            f"got {tuple(head_task_losses.shape)}"
        )
    align = cosine_misalignment(adapted, z).sum()
    return 0.5 * align + 0.5 * (joint_task_loss + head_task_losses.mean())
