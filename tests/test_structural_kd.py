"""Structural KD terms: similarity matrices, anchors, OT and centroid losses, PKD baseline."""

from __future__ import annotations

import math

import pytest
import torch

from models.sinkhorn import sinkhorn_divergence
from models.structural_kd import (
    _similarity_column_means,
    centroid_loss,
    cosine_similarity_matrix,
    pkd_loss,
    shift_nonnegative,
    structural_ot_loss,
    topk_anchor_indices,
)

F64 = torch.float64

# A hand-made "teacher similarity" matrix (symmetric, unit diagonal).
S_HAND = torch.tensor(
    [
        [1.0, 0.2, -0.3, 0.5],
        [0.2, 1.0, 0.7, -0.1],
        [-0.3, 0.7, 1.0, 0.0],
        [0.5, -0.1, 0.0, 1.0],
    ]
)


def _embeddings(b: int = 8, d_t: int = 6, d_s: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    z_t = torch.randn(b, d_t, generator=gen, dtype=F64)
    z_s = torch.randn(b, d_s, generator=gen, dtype=F64)
    return z_t, z_s


def test_cosine_similarity_matrix_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=F64)
    r = 1 / math.sqrt(2)  # cos 45 degrees
    expected = torch.tensor([[1, 0, r], [0, 1, r], [r, r, 1]], dtype=F64)
    torch.testing.assert_close(cosine_similarity_matrix(z), expected)


def test_shift_is_one_global_shift() -> None:
    s = torch.tensor([[1.0, -0.5], [-0.25, 1.0]])
    torch.testing.assert_close(shift_nonnegative(s), torch.tensor([[1.5, 0.0], [0.25, 1.5]]))


def test_topk_least_similar_by_hand() -> None:
    # row 0: -0.3 (col 2) < 0.2 (col 1); row 1: -0.1 (3) < 0.2 (0);
    # row 2: -0.3 (0) < 0.0 (3); row 3: -0.1 (1) < 0.0 (2)
    expected = torch.tensor([[2, 1], [3, 0], [0, 3], [1, 2]])
    assert torch.equal(topk_anchor_indices(S_HAND, 2), expected)


def test_topk_most_similar_by_hand() -> None:
    # the diagonal (1.0) comes first, then row 0: 0.5 (3); row 1: 0.7 (2); row 2: 0.7 (1);
    # row 3: 0.5 (0)
    expected = torch.tensor([[0, 3], [1, 2], [2, 1], [3, 0]])
    assert torch.equal(topk_anchor_indices(S_HAND, 2, largest=True), expected)


def test_topk_clips_k_and_breaks_ties_by_column() -> None:
    assert topk_anchor_indices(S_HAND, 10).shape == (4, 4)
    ties = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.1, 0.1, 0.1]])
    assert topk_anchor_indices(ties, 1).flatten().tolist() == [2, 2, 0]
    assert topk_anchor_indices(ties, 1, largest=True).flatten().tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="k"):
        topk_anchor_indices(S_HAND, 0)


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("decimals", [None, 1])  # 1 decimal: many ties in every row
def test_topk_equals_the_stable_sort(largest: bool, decimals: int | None) -> None:
    gen = torch.Generator().manual_seed(3)
    for k in (1, 5, 30, 63, 64):
        z = torch.randn(64, 16, generator=gen)
        s = cosine_similarity_matrix(z)
        if decimals is not None:
            s = s.round(decimals=decimals)
        order = torch.sort(s, dim=1, descending=largest, stable=True).indices[:, :k]
        assert torch.equal(topk_anchor_indices(s, k, largest=largest), order)


def test_centroid_column_means_equal_those_of_the_matrix() -> None:
    z = torch.randn(50, 9, generator=torch.Generator().manual_seed(4), dtype=F64)
    torch.testing.assert_close(_similarity_column_means(z), cosine_similarity_matrix(z).mean(dim=0))


def test_structural_ot_loss_follows_the_spec() -> None:
    """Rebuild the two clouds row by row, as written in METHOD.md 4.1-4.4."""
    z_t, z_s = _embeddings()
    k = 3
    s_t, s_s = cosine_similarity_matrix(z_t), cosine_similarity_matrix(z_s)
    st_shift, ss_shift = s_t - s_t.min(), s_s - s_s.min()
    t_rows, s_rows = [], []
    for i in range(z_t.shape[0]):
        cols = torch.argsort(s_t[i])[:k]  # k least similar to sample i, by the teacher
        t_rows.append(st_shift[i, cols])
        s_rows.append(ss_shift[i, cols])
    expected = sinkhorn_divergence(torch.stack(t_rows), torch.stack(s_rows), blur=0.1)
    torch.testing.assert_close(structural_ot_loss(z_t, z_s, k=k, blur=0.1), expected)


def test_structural_ot_loss_is_zero_for_the_same_structure() -> None:
    z_t, _ = _embeddings()
    rescaled = z_t * torch.linspace(0.5, 3.0, z_t.shape[0], dtype=F64)[:, None]  # same cosines
    for n_iters in (0, 40):
        loss = structural_ot_loss(z_t, rescaled, k=4, n_iters=n_iters)
        assert abs(loss.item()) < 1e-10
    assert structural_ot_loss(z_t, _embeddings(seed=1)[1], k=4).item() > 1e-4


def test_structural_ot_loss_options() -> None:
    z_t, z_s = _embeddings(b=5)
    least = structural_ot_loss(z_t, z_s, k=30)  # k clipped to the batch size
    most = structural_ot_loss(z_t, z_s, k=2, largest=True, n_iters=20)
    assert least.ndim == 0 and most.ndim == 0 and torch.isfinite(least) and torch.isfinite(most)
    with pytest.raises(ValueError, match="batch"):
        structural_ot_loss(z_t, z_s[:4], k=2)


def test_structural_ot_loss_accepts_half_precision_embeddings() -> None:
    z_t, z_s = _embeddings()
    z_s = z_s.to(torch.bfloat16).requires_grad_(True)
    loss = structural_ot_loss(z_t.float(), z_s, k=3)
    loss.backward()
    assert loss.dtype == torch.float32 and z_s.grad.dtype == torch.bfloat16


def test_gradcheck_structural_ot_loss_wrt_student() -> None:
    z_t, z_s = _embeddings(b=6, d_t=4, d_s=3, seed=2)
    z_s.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda s: structural_ot_loss(z_t, s, k=3, blur=0.5, n_iters=150), (z_s,)
    )


@pytest.mark.parametrize(
    "loss_fn",
    [
        lambda t, s: structural_ot_loss(t, s, k=3),
        lambda t, s: structural_ot_loss(t, s, k=3, n_iters=10),
        centroid_loss,
        pkd_loss,
    ],
    ids=["ot", "ot_fixed", "centroid", "pkd"],
)
def test_gradients_reach_the_student_never_the_teacher(loss_fn) -> None:
    z_t, z_s = _embeddings(d_s=6)
    z_t.requires_grad_(True)
    z_s.requires_grad_(True)
    loss_fn(z_t, z_s).backward()
    assert z_t.grad is None
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0 and torch.isfinite(z_s.grad).all()


def test_centroid_loss_by_hand() -> None:
    # teacher: orthogonal pair -> S_T = identity -> column means (0.5, 0.5)
    # student: parallel pair  -> S_S = all ones  -> column means (1, 1)
    # || (0.5, 0.5) - (1, 1) ||_2 = sqrt(0.25 + 0.25) = sqrt(0.5)
    z_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=F64)
    z_s = torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)
    torch.testing.assert_close(centroid_loss(z_t, z_s), torch.tensor(math.sqrt(0.5), dtype=F64))


def test_centroid_loss_zero_and_finite_gradient_at_equality() -> None:
    z_t, _ = _embeddings(d_s=6)
    z_s = z_t.clone().requires_grad_(True)
    loss = centroid_loss(z_t, z_s)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(z_s.grad).all()


def test_pkd_loss_by_hand() -> None:
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    assert pkd_loss(torch.stack([e1]), torch.stack([2 * e1])).item() == pytest.approx(0.0)  # same
    assert pkd_loss(torch.stack([e1]), torch.stack([e2])).item() == pytest.approx(1.0)  # orthogonal
    assert pkd_loss(torch.stack([e1]), torch.stack([-e1])).item() == pytest.approx(2.0)  # opposite
    # mean over the batch: (0 + 1) / 2
    assert pkd_loss(torch.stack([e1, e1]), torch.stack([e1, e2])).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="dimension"):
        pkd_loss(torch.ones(2, 3), torch.ones(2, 4))
