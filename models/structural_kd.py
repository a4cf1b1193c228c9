"""Structural knowledge distillation terms (METHOD.md Part 2, 4.1-4.5 and 4.8).

The structure of a batch is its cosine-similarity matrix. The student learns the teacher's
structure through a debiased Sinkhorn divergence between the rows of both matrices,
restricted to teacher-chosen anchor columns, plus a centroid term; ``pkd_loss`` is the
point-to-point baseline. The teacher is never differentiated: its embeddings are detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from models.sinkhorn import sinkhorn_divergence

__all__ = [
    "centroid_loss",
    "cosine_similarity_matrix",
    "pkd_loss",
    "shift_nonnegative",
    "structural_ot_loss",
    "topk_anchor_indices",
]


def _check_pair(z_teacher: Tensor, z_student: Tensor, same_dim: bool = False) -> None:
    """Both embeddings must be (B, D) matrices of the same batch size (and D if asked)."""
    if z_teacher.dim() != 2 or z_student.dim() != 2:
        raise ValueError(
            f"embeddings must be (B, D), got {tuple(z_teacher.shape)} and {tuple(z_student.shape)}"
        )
    if z_teacher.shape[0] != z_student.shape[0]:
        raise ValueError(
            f"teacher and student batch sizes differ: {z_teacher.shape[0]} vs {z_student.shape[0]}"
        )
    if same_dim and z_teacher.shape[1] != z_student.shape[1]:
        raise ValueError(
            f"teacher and student dimensions differ: {z_teacher.shape[1]} vs {z_student.shape[1]}"
        )


def cosine_similarity_matrix(z: Tensor) -> Tensor:
    """``S_ij = cos(z_i, z_j)`` of a (B, D) embedding matrix, shape (B, B); diagonal = 1."""
    if z.dim() != 2:
        raise ValueError(f"z must be (B, D), got {tuple(z.shape)}")
    unit = F.normalize(z, dim=1, eps=1e-12)
    return unit @ unit.T


def shift_nonnegative(s: Tensor) -> Tensor:
    """``s - min(s)``: one global shift per matrix, so that all entries are >= 0."""
    return s - s.min()


def topk_anchor_indices(s_teacher: Tensor, k: int, largest: bool = False) -> Tensor:
    """Per row, the columns of the k least (or, with ``largest``, most) similar samples.

    Computed on the teacher's un-shifted (B, B) matrix; ``k`` is clipped to B. Ties are
    broken by the lower column index (stable sort), so the result is deterministic.
    Returns a LongTensor (B, k), columns ordered from the most extreme one.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if s_teacher.dim() != 2 or s_teacher.shape[0] != s_teacher.shape[1]:
        raise ValueError(f"s_teacher must be a square (B, B) matrix, got {tuple(s_teacher.shape)}")
    s = s_teacher.detach()
    k = min(k, s.shape[1])
    # topk is ~3x cheaper than a full sort but orders ties arbitrarily: use it when the k
    # extreme values of every row (and the first one left out) are all distinct, else sort.
    depth = min(k + 1, s.shape[1])
    values, order = torch.topk(s, depth, dim=1, largest=largest, sorted=True)
    if depth > 1 and bool((values[:, 1:] == values[:, :-1]).any()):
        order = torch.sort(s, dim=1, descending=largest, stable=True).indices
    return order[:, :k]


def structural_ot_loss(
    z_teacher: Tensor,
    z_student: Tensor,
    k: int,
    blur: float = 0.1,
    largest: bool = False,
    n_iters: int = 0,
) -> Tensor:
    """Debiased Sinkhorn divergence between the teacher's and the student's similarity rows.

    Row i of each cloud holds the shifted similarities of sample i to its k anchor samples,
    chosen per row on the teacher's un-shifted matrix (:func:`topk_anchor_indices`); both
    clouds are uniform, B points in R^k. The teacher side is detached.

    Args:
        z_teacher: (B, D_t) teacher embeddings (no gradient flows to them).
        z_student: (B, D_s) student embeddings.
        k: number of anchors per row (clipped to B).
        blur: Sinkhorn blur, eps = blur**2; n_iters: see :func:`sinkhorn_divergence`.
        largest: take the most similar anchors instead of the least similar ones.

    Returns:
        A scalar tensor, differentiable w.r.t. ``z_student``.
    """
    _check_pair(z_teacher, z_student)
    if z_teacher.shape[0] < 2:
        raise ValueError("structural_ot_loss needs a batch of at least 2 samples")
    with torch.no_grad():
        s_teacher = cosine_similarity_matrix(z_teacher.detach())
        anchors = topk_anchor_indices(s_teacher, k, largest=largest)
        teacher_rows = shift_nonnegative(s_teacher).gather(1, anchors)
    s_student = shift_nonnegative(cosine_similarity_matrix(z_student))
    student_rows = s_student.gather(1, anchors)
    dtype = torch.promote_types(student_rows.dtype, torch.float32)  # half precision: float32
    return sinkhorn_divergence(
        teacher_rows.to(dtype), student_rows.to(dtype), blur=blur, n_iters=n_iters
    )


def centroid_loss(z_teacher: Tensor, z_student: Tensor) -> Tensor:
    """``|| colmean(S_T) - colmean(S_S) ||_2`` on the full, un-shifted similarity matrices.

    A plain (not squared) L2 norm; the teacher side is detached. Its gradient at a zero
    difference is 0 (torch's subgradient convention for the norm).
    """
    _check_pair(z_teacher, z_student)
    with torch.no_grad():
        c_teacher = _similarity_column_means(z_teacher.detach())
    c_student = _similarity_column_means(z_student)
    return torch.linalg.vector_norm(c_teacher.to(c_student.dtype) - c_student)


def _similarity_column_means(z: Tensor) -> Tensor:
    """``cosine_similarity_matrix(z).mean(0)`` without the (B, B) matrix: since S = U U^T
    with unit rows U, its column means are ``U @ mean_i(u_i)``, O(B D) instead of O(B^2 D)."""
    unit = F.normalize(z, dim=1, eps=1e-12)
    return unit @ unit.mean(dim=0)


def pkd_loss(z_teacher: Tensor, z_student: Tensor) -> Tensor:
    """Point-to-point baseline: ``mean_i (1 - cos(z_teacher_i, z_student_i))``, teacher detached."""
    _check_pair(z_teacher, z_student, same_dim=True)
    teacher = z_teacher.detach().to(z_student.dtype)
    return (1.0 - F.cosine_similarity(teacher, z_student, dim=1, eps=1e-12)).mean()
