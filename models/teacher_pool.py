"""Teacher pool (one teacher per modality + the joint teacher) and teacher selection.

Pool order: the modality teachers in the given modality order, then the joint (fusion)
teacher LAST. A modality teacher is the modality's adapter plus a linear head; the
joint teacher is the fusion network. Selection strategies (METHOD Part 1, 3):

- ``min_loss``: one teacher per batch, lowest batch task loss (CE; 1 - CCC);
- ``min_entropy``: one teacher per batch, lowest mean softmax entropy (label-free,
  classification only);
- ``joint_only``: always the joint teacher (PKDOT);
- ``per_sample``: each sample its own teacher, lowest per-sample task loss.

The joint teacher is the fallback: a modality teacher is chosen only when its score is
strictly lower than the joint teacher's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.adapters import Adapter, alignment_loss, cosine_misalignment
from models.losses import ccc_loss

JOINT = "joint"
STRATEGIES: tuple[str, ...] = ("min_loss", "min_entropy", "joint_only", "per_sample")
TASKS: tuple[str, ...] = ("classification", "regression")

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class PoolOutput:
    """Outputs of every pool teacher: ``names`` (joint last), z (P,B,D), pred (P,B,n)."""

    names: list[str]
    z: Tensor
    pred: Tensor


@dataclass
class Selection:
    """Chosen teacher embeddings z (B,D, detached), pool index per sample, counts per name."""

    z: Tensor
    index: Tensor
    counts: dict[str, int]


class TeacherPool(nn.Module):
    """Joint fusion teacher + one Adapter and one linear head per modality."""

    def __init__(
        self,
        fusion: nn.Module,
        embed_dim: int,
        n_modalities: int,
        n_outputs: int,
        modality_names: list[str],
        adapter_hidden: int,
    ) -> None:
        super().__init__()
        names = list(modality_names)
        if len(names) != n_modalities:
            raise ValueError(f"{n_modalities} modalities but names {names}")
        if JOINT in names or len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique and not {JOINT!r}: {names}")
        self.fusion = fusion
        self.adapters = nn.ModuleList(Adapter(embed_dim, adapter_hidden) for _ in names)
        self.heads = nn.ModuleList(nn.Linear(embed_dim, n_outputs) for _ in names)
        self.modality_names = names
        self.names = [*names, JOINT]
        self.embed_dim = embed_dim

    def forward(self, embeddings: Tensor) -> PoolOutput:
        """embeddings (B, M, D) from the frozen modality encoders -> PoolOutput."""
        if embeddings.ndim != 3 or embeddings.shape[1] != len(self.modality_names):
            raise ValueError(
                f"expected embeddings (B, {len(self.modality_names)}, {self.embed_dim}), "
                f"got {tuple(embeddings.shape)}"
            )
        adapted = [a(embeddings[:, m]) for m, a in enumerate(self.adapters)]
        preds = [h(a) for h, a in zip(self.heads, adapted, strict=True)]
        joint_pred, joint_z = self.fusion(embeddings)
        return PoolOutput(
            names=list(self.names),
            z=torch.stack([*adapted, joint_z]),
            pred=torch.stack([*preds, joint_pred]),
        )

    def alignment_objective(
        self, embeddings: Tensor, target: Tensor, task_loss_fn: LossFn
    ) -> tuple[Tensor, dict[str, float]]:
        """Self-distillation loss (METHOD 4.6) and its parts as floats for logging."""
        out = self(embeddings)
        n_mod = len(self.modality_names)
        head_losses = torch.stack([task_loss_fn(out.pred[m], target) for m in range(n_mod)])
        joint_loss = task_loss_fn(out.pred[-1], target)
        loss = alignment_loss(out.z[:n_mod], out.z[-1], joint_loss, head_losses)
        misalign = cosine_misalignment(out.z[:n_mod].detach(), out.z[-1].detach())
        parts = {
            "loss": loss.item(),
            "align": misalign.sum().item(),
            "task_joint": joint_loss.item(),
        }
        for m, name in enumerate(self.modality_names):
            parts[f"align_{name}"] = misalign[m].item()
            parts[f"task_{name}"] = head_losses[m].item()
        return loss, parts


def ce_batch_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean cross-entropy over the batch."""
    return F.cross_entropy(pred, target.long())


def ce_per_sample_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy per sample, (B,)."""
    return F.cross_entropy(pred, target.long(), reduction="none")


def ccc_batch_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - concordance correlation over the batch, averaged over output dims."""
    pred = pred.reshape(pred.shape[0], -1).float()
    return ccc_loss(pred, target.reshape(pred.shape).float())


def mae_per_sample_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over output dims per sample, (B,)."""
    pred = pred.reshape(pred.shape[0], -1)
    return (pred - target.reshape(pred.shape).to(pred.dtype)).abs().mean(dim=1)


def _mean_entropy(logits: Tensor) -> Tensor:
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1).mean()


def _pick(scores: Tensor) -> Tensor:
    """Index of the lowest score along dim 0 (joint last); joint unless strictly beaten."""
    scores = torch.nan_to_num(scores.float(), nan=float("inf"))
    if scores.shape[0] == 1:
        return torch.zeros(scores.shape[1:], dtype=torch.long, device=scores.device)
    best = scores[:-1].argmin(dim=0)  # first modality teacher on ties
    best_score = scores[:-1].gather(0, best.unsqueeze(0)).squeeze(0)
    joint = torch.full_like(best, scores.shape[0] - 1)
    return torch.where(best_score < scores[-1], best, joint)


def select_teacher(
    strategy: str,
    out: PoolOutput,
    target: Tensor | None,
    task: str,
    per_sample_loss_fn: LossFn | None = None,
    batch_loss_fn: LossFn | None = None,
) -> Selection:
    """Choose the teacher embedding of each sample (see module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(
            f"unknown selection strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}"
        )
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    if not out.names or out.names[-1] != JOINT or len(out.names) != out.z.shape[0]:
        raise ValueError(f"pool names must end with {JOINT!r} and match z: {out.names}")
    if strategy == "min_entropy" and task != "classification":
        raise ValueError("min_entropy needs classification (softmax entropy); task is regression")
    if strategy in ("min_loss", "per_sample") and target is None:
        raise ValueError(f"selection strategy {strategy!r} needs targets")
    n_pool, batch = out.z.shape[0], out.z.shape[1]
    classify = task == "classification"
    with torch.no_grad():
        if strategy == "joint_only":
            index = torch.full((batch,), n_pool - 1, dtype=torch.long, device=out.z.device)
        elif strategy == "per_sample":
            loss_fn = per_sample_loss_fn or (
                ce_per_sample_loss if classify else mae_per_sample_loss
            )
            losses = torch.stack([loss_fn(out.pred[p], target) for p in range(n_pool)])
            index = _pick(losses.reshape(n_pool, batch)).to(out.z.device)
        else:
            if strategy == "min_loss":
                loss_fn = batch_loss_fn or (ce_batch_loss if classify else ccc_batch_loss)
                scores = torch.stack(
                    [loss_fn(out.pred[p], target).reshape(()) for p in range(n_pool)]
                )
            else:
                scores = torch.stack([_mean_entropy(out.pred[p]) for p in range(n_pool)])
            chosen = _pick(scores)
            index = chosen.expand(batch).clone().to(out.z.device)
        z = out.z[index, torch.arange(batch, device=out.z.device)].detach()
    counts = {name: int((index == p).sum()) for p, name in enumerate(out.names)}
    return Selection(z=z, index=index, counts=counts)
