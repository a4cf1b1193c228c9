"""Fusion networks and the student: shapes, gradients, batch independence."""

from __future__ import annotations

import pytest
import torch

from models.fusion import FUSIONS, build_fusion
from models.student import Student

M, D, N_OUT = 4, 32, 3


def _batches(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, M, D, generator=gen)
    batch_a = torch.cat([torch.randn(3, M, D, generator=gen), sample])
    batch_b = torch.cat([sample, 5 * torch.randn(6, M, D, generator=gen) + 1])
    return sample, batch_a, batch_b


@pytest.mark.parametrize("name", FUSIONS)
def test_fusion_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, M, D, N_OUT)
    x = torch.randn(5, M, D, requires_grad=True)
    pred, z = fusion(x)
    assert pred.shape == (5, N_OUT) and z.shape == (5, D)
    (pred.sum() + z.pow(2).sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fusion.parameters())


@pytest.mark.parametrize("name", FUSIONS)
def test_fusion_two_modalities(name: str) -> None:
    pred, z = build_fusion(name, 2, 16, 2)(torch.randn(3, 2, 16))
    assert pred.shape == (3, 2) and z.shape == (3, 16)


@pytest.mark.parametrize("name", FUSIONS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fusion_batch_independence(name: str, mode: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, M, D, N_OUT)
    fusion.train(mode == "train")  # dropout is 0 by default, so train mode is deterministic
    sample, batch_a, batch_b = _batches(1)
    with torch.no_grad():
        alone = fusion(sample)
        in_a = fusion(batch_a)
        in_b = fusion(batch_b)
    for k in range(2):
        torch.testing.assert_close(in_a[k][3], alone[k][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(in_b[k][0], alone[k][0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", FUSIONS)
def test_fusion_uses_every_modality(name: str) -> None:
    torch.manual_seed(0)
    fusion = build_fusion(name, M, D, N_OUT).eval()
    x = torch.randn(2, M, D)
    with torch.no_grad():
        base = fusion(x)[1]
        for m in range(M):
            changed = x.clone()
            changed[:, m] = torch.randn(2, D)
            assert not torch.allclose(fusion(changed)[1], base)


def test_build_fusion_errors() -> None:
    with pytest.raises(ValueError, match="concat, jca, jmt"):
        build_fusion("gated", M, D, N_OUT)
    with pytest.raises(ValueError, match="divisible"):
        build_fusion("jmt", M, 30, N_OUT, n_heads=4)
    with pytest.raises(ValueError, match=r"\(B, 4, 32\)"):
        build_fusion("concat", M, D, N_OUT)(torch.randn(2, 3, D))


def test_fusion_kwargs() -> None:
    fusion = build_fusion("jmt", M, D, N_OUT, n_heads=4, n_layers=2, dropout=0.1)
    assert len(fusion.blocks) == 2
    assert build_fusion("jca", M, D, N_OUT, dim=8, att_dim=4).dim == 8
    assert build_fusion("concat", M, D, N_OUT, hidden=7).mlp[0].out_features == 7


def test_student_shapes_and_batch_independence() -> None:
    torch.manual_seed(0)
    student = Student(in_dim=24, hidden=40, embed_dim=D, n_outputs=2)
    pred, z_s = student(torch.randn(5, 24))
    assert pred.shape == (5, 2) and z_s.shape == (5, D)
    student.eval()
    gen = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 24, generator=gen)
    batch_a = torch.cat([torch.randn(2, 24, generator=gen), sample])
    batch_b = torch.cat([sample, 10 * torch.randn(4, 24, generator=gen)])
    with torch.no_grad():
        alone, in_a, in_b = student(sample), student(batch_a), student(batch_b)
    for k in range(2):
        torch.testing.assert_close(in_a[k][2], alone[k][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(in_b[k][0], alone[k][0], atol=1e-6, rtol=0)
