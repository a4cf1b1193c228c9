"""Adapters, alignment loss, teacher pool and teacher selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.adapters import Adapter, alignment_loss
from models.fusion import FUSIONS, build_fusion
from models.teacher_pool import STRATEGIES, PoolOutput, TeacherPool, select_teacher

NAMES = ["video", "eda", "joint"]
BIG = 10.0


def _pool_output(pred: torch.Tensor, dim: int = 4) -> PoolOutput:
    n_pool, batch = pred.shape[:2]
    z = torch.randn(n_pool, batch, dim, requires_grad=True)
    return PoolOutput(names=list(NAMES[: n_pool - 1]) + ["joint"], z=z, pred=pred)


def _onehot_logits(labels: list[int], scale: float, n_classes: int = 2) -> torch.Tensor:
    return scale * F.one_hot(torch.tensor(labels), n_classes).float()


def _check_z(sel, out: PoolOutput) -> None:
    assert not sel.z.requires_grad
    for i, p in enumerate(sel.index.tolist()):
        assert torch.equal(sel.z[i], out.z[p, i].detach())


# --- adapters and alignment loss -------------------------------------------------------


def test_adapter_shapes_and_activation() -> None:
    assert Adapter(8, 3)(torch.randn(5, 8)).shape == (5, 8)
    linear = Adapter(8, 3)
    assert [type(m).__name__ for m in linear.net] == ["Linear", "Identity", "Linear"]
    assert type(Adapter(8, 3, activation="relu").net[1]).__name__ == "ReLU"
    with pytest.raises(ValueError, match="relu"):
        Adapter(8, 3, activation="swish")


def test_alignment_loss_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    joint, heads = torch.tensor(1.0), torch.tensor([2.0, 4.0])
    same = torch.stack([z, 3 * z])  # cos = 1 everywhere: no alignment term
    assert alignment_loss(same, z, joint, heads).item() == pytest.approx(0.5 * (1.0 + 3.0))
    orth = torch.stack([torch.tensor([[0.0, 1.0], [1.0, 0.0]]), -z])  # cos 0 and cos -1
    expected = 0.5 * (1.0 + 2.0) + 0.5 * (1.0 + 3.0)
    assert alignment_loss(orth, z, joint, heads).item() == pytest.approx(expected)
    # M = 2 equals the reference: 1/2 [a_v + a_p] + 1/2 [CE_J + 1/2 CE_v + 1/2 CE_p]
    mixed = torch.stack([z, torch.tensor([[0.0, 1.0], [0.0, 1.0]])])  # cos (0, 1): mean 0.5
    ref = 0.5 * (0.0 + 0.5) + 0.5 * (1.0 + 0.5 * 2.0 + 0.5 * 4.0)
    assert alignment_loss(mixed, z, joint, heads).item() == pytest.approx(ref)
    with pytest.raises(ValueError):
        alignment_loss(same, z, joint, torch.tensor([1.0, 2.0, 3.0]))


# --- teacher pool ----------------------------------------------------------------------


@pytest.mark.parametrize("fusion_name", FUSIONS)
def test_pool_forward_and_alignment_backprop(fusion_name: str) -> None:
    torch.manual_seed(0)
    n_mod, dim, n_out, batch = 3, 16, 2, 6
    names = ["video", "eda", "ecg"]
    pool = TeacherPool(build_fusion(fusion_name, n_mod, dim, n_out), dim, n_mod, n_out, names, 8)
    emb = torch.randn(batch, n_mod, dim)
    out = pool(emb)
    assert out.names == [*names, "joint"]
    assert out.z.shape == (n_mod + 1, batch, dim) and out.pred.shape == (n_mod + 1, batch, n_out)
    target = torch.tensor([0, 1, 0, 1, 1, 0])
    loss, parts = pool.alignment_objective(emb, target, F.cross_entropy)
    assert loss.ndim == 0 and parts["loss"] == pytest.approx(loss.item())
    assert set(parts) >= {"align", "task_joint", "task_video", "align_ecg"}
    manual = 0.5 * parts["align"] + 0.5 * (
        parts["task_joint"] + sum(parts[f"task_{n}"] for n in names) / n_mod
    )
    assert parts["loss"] == pytest.approx(manual, rel=1e-5)
    loss.backward()
    for part in (pool.adapters, pool.heads, pool.fusion):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads)
        assert sum(g.abs().sum() for g in grads) > 0


def test_pool_rejects_bad_names() -> None:
    fusion = build_fusion("concat", 2, 8, 2)
    with pytest.raises(ValueError):
        TeacherPool(fusion, 8, 2, 2, ["video"], 4)
    with pytest.raises(ValueError):
        TeacherPool(fusion, 8, 2, 2, ["video", "joint"], 4)


# --- selection -------------------------------------------------------------------------


def test_min_loss_picks_perfect_teacher() -> None:
    labels = [0, 1, 1, 0]
    pred = torch.stack(
        [
            _onehot_logits(labels, BIG),  # video: perfect
            _onehot_logits([1 - y for y in labels], BIG),  # eda: confidently wrong
            _onehot_logits(labels, 1.0),  # joint: right but unsure
        ]
    )
    out = _pool_output(pred)
    sel = select_teacher("min_loss", out, torch.tensor(labels), "classification")
    assert sel.index.tolist() == [0, 0, 0, 0]
    assert sel.counts == {"video": 4, "eda": 0, "joint": 0}
    _check_z(sel, out)


def test_min_loss_joint_fallback_on_tie() -> None:
    logits = _onehot_logits([0, 1, 1], 2.0)
    out = _pool_output(torch.stack([logits, logits, logits]))
    sel = select_teacher("min_loss", out, torch.tensor([0, 1, 0]), "classification")
    assert sel.index.tolist() == [2, 2, 2] and sel.counts["joint"] == 3
    # joint strictly best -> joint too
    pred = torch.stack([logits, logits, _onehot_logits([0, 1, 0], BIG)])
    sel = select_teacher("min_loss", _pool_output(pred), torch.tensor([0, 1, 0]), "classification")
    assert sel.index.tolist() == [2, 2, 2]


def test_min_loss_tie_between_modality_teachers_takes_first() -> None:
    labels = [0, 1]
    good = _onehot_logits(labels, BIG)
    pred = torch.stack([good, good, _onehot_logits(labels, 1.0)])
    sel = select_teacher("min_loss", _pool_output(pred), torch.tensor(labels), "classification")
    assert sel.index.tolist() == [0, 0]


def test_min_loss_custom_batch_loss_fn() -> None:
    pred = torch.zeros(3, 2, 2)
    calls = []

    def fake(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.tensor([3.0, 1.0, 2.0])[len(calls) - 1]

    sel = select_teacher(
        "min_loss", _pool_output(pred), torch.tensor([0, 1]), "classification", batch_loss_fn=fake
    )
    assert len(calls) == 3 and sel.index.tolist() == [1, 1]


def test_min_loss_regression_ccc() -> None:
    torch.manual_seed(0)
    target = torch.tensor([[0.1, -0.5], [0.4, 0.2], [-0.3, 0.7], [0.8, -0.1]])
    pred = torch.stack([target + 0.3 * torch.randn(4, 2), target.clone(), torch.zeros(4, 2)])
    out = _pool_output(pred)
    sel = select_teacher("min_loss", out, target, "regression")
    assert sel.index.tolist() == [1, 1, 1, 1] and sel.counts["eda"] == 4
    _check_z(sel, out)


def test_min_entropy_label_free() -> None:
    pred = torch.stack(
        [
            _onehot_logits([0, 1, 0], 1.0),
            _onehot_logits([1, 1, 0], BIG),  # most confident (right or wrong)
            _onehot_logits([0, 1, 1], 2.0),
        ]
    )
    sel = select_teacher("min_entropy", _pool_output(pred), None, "classification")
    assert sel.index.tolist() == [1, 1, 1]
    same = _onehot_logits([0, 1, 0], 2.0)
    sel = select_teacher(
        "min_entropy", _pool_output(torch.stack([same, same, same])), None, "classification"
    )
    assert sel.index.tolist() == [2, 2, 2]


def test_min_entropy_regression_raises() -> None:
    out = _pool_output(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="classification"):
        select_teacher("min_entropy", out, torch.zeros(2, 2), "regression")


def test_joint_only() -> None:
    # the joint teacher is wrong and the video teacher perfect: joint_only still takes joint
    labels = [0, 1]
    pred = torch.stack(
        [_onehot_logits(labels, BIG), _onehot_logits(labels, 1.0), _onehot_logits([1, 0], 1.0)]
    )
    out = _pool_output(pred)
    sel = select_teacher("joint_only", out, torch.tensor([0, 1]), "classification")
    assert sel.index.tolist() == [2, 2] and sel.counts == {"video": 0, "eda": 0, "joint": 2}
    _check_z(sel, out)


def test_per_sample_classification() -> None:
    target = [0, 1, 0, 1]
    video = torch.tensor([[BIG, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    eda = torch.tensor([[0.0, 0.0], [0.0, BIG], [1.0, 0.0], [0.0, 1.0]])
    joint = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, BIG]])
    out = _pool_output(torch.stack([video, eda, joint]))
    sel = select_teacher("per_sample", out, torch.tensor(target), "classification")
    # row 0: video best; row 1: eda best; row 2: three-way tie -> joint; row 3: joint best
    assert sel.index.tolist() == [0, 1, 2, 2]
    assert sel.counts == {"video": 1, "eda": 1, "joint": 2}
    _check_z(sel, out)


def test_per_sample_regression_mae_and_custom_fn() -> None:
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    video = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    eda = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    joint = torch.tensor([[0.5, 0.5], [0.5, 0.5], [2.0, 2.0]])
    out = _pool_output(torch.stack([video, eda, joint]))
    sel = select_teacher("per_sample", out, target, "regression")
    assert sel.index.tolist() == [0, 1, 2]

    def worst(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -(p - t).abs().mean(dim=1)

    sel = select_teacher("per_sample", out, target, "regression", per_sample_loss_fn=worst)
    assert sel.index.tolist() == [1, 0, 0]


def test_selection_errors() -> None:
    out = _pool_output(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match=", ".join(STRATEGIES)):
        select_teacher("random", out, torch.tensor([0, 1]), "classification")
    with pytest.raises(ValueError, match="targets"):
        select_teacher("min_loss", out, None, "classification")
    with pytest.raises(ValueError, match="targets"):
        select_teacher("per_sample", out, None, "classification")
    with pytest.raises(ValueError, match="task"):
        select_teacher("joint_only", out, None, "ranking")


def test_selection_on_real_pool_has_no_grad() -> None:
    torch.manual_seed(0)
    pool = TeacherPool(build_fusion("jmt", 2, 8, 2), 8, 2, 2, ["video", "audio"], 4)
    out = pool(torch.randn(5, 2, 8))
    target = torch.tensor([0, 1, 1, 0, 1])
    for strategy in STRATEGIES:
        sel = select_teacher(strategy, out, target, "classification")
        assert sel.z.shape == (5, 8) and not sel.z.requires_grad
        assert sel.index.dtype == torch.long and sum(sel.counts.values()) == 5
