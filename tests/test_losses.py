"""CCC and task losses against hand-derived values; the weighted objective registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    LOSS_TERMS,
    LossInputs,
    ccc,
    ccc_loss,
    task_loss,
    weighted_objective,
)
from models.structural_kd import centroid_loss, structural_ot_loss

F64 = torch.float64


def test_ccc_by_hand() -> None:
    # dim 0: p = (1, 2, 3), t = (2, 4, 6)
    #   means 2 and 4; var_p = (1 + 0 + 1) / 3 = 2/3; var_t = (4 + 0 + 4) / 3 = 8/3
    #   cov = (1*2 + 0 + 1*2) / 3 = 4/3
    #   ccc = 2 * 4/3 / (2/3 + 8/3 + (2 - 4)^2) = (8/3) / (22/3) = 4/11
    # dim 1: p = (3, 2, 1), t = (1, 2, 3): equal means, variances 2/3, cov = -2/3 -> ccc = -1
    # dim 2: p = t + 1 = (1, 2, 3) vs (0, 1, 2): var 2/3 each, cov 2/3, mean gap 1
    #   ccc = (4/3) / (2/3 + 2/3 + 1) = 4/7
    pred = torch.tensor([[1.0, 3.0, 1.0], [2.0, 2.0, 2.0], [3.0, 1.0, 3.0]], dtype=F64)
    target = torch.tensor([[2.0, 1.0, 0.0], [4.0, 2.0, 1.0], [6.0, 3.0, 2.0]], dtype=F64)
    expected = torch.tensor([4 / 11, -1.0, 4 / 7], dtype=F64)
    torch.testing.assert_close(ccc(pred, target), expected)
    # loss = mean(1 - ccc) = (7/11 + 2 + 3/7) / 3
    expected_loss = torch.tensor((7 / 11 + 2 + 3 / 7) / 3, dtype=F64)
    torch.testing.assert_close(ccc_loss(pred, target), expected_loss)


def test_ccc_perfect_agreement_and_1d_input() -> None:
    x = torch.tensor([0.1, -0.4, 0.9, 0.3])
    torch.testing.assert_close(ccc(x, x), torch.tensor([1.0]))


def test_ccc_mask_ignores_unannotated_values() -> None:
    # the masked row holds the Aff-Wild2 "unannotated" label -5 (and a NaN prediction)
    pred = torch.tensor([[1.0], [2.0], [3.0], [float("nan")]], dtype=F64)
    target = torch.tensor([[2.0], [4.0], [6.0], [-5.0]], dtype=F64)
    mask = target != -5
    torch.testing.assert_close(ccc(pred, target, mask), torch.tensor([4 / 11], dtype=F64))


def test_ccc_mask_per_dimension() -> None:
    pred = torch.tensor([[1.0, 3.0], [2.0, 2.0], [3.0, 9.0], [4.0, 1.0]], dtype=F64)
    target = torch.tensor([[2.0, 1.0], [4.0, 2.0], [6.0, -5.0], [-5.0, 3.0]], dtype=F64)
    mask = torch.tensor([[True, True], [True, True], [True, False], [False, True]])
    # dim 0 keeps rows 0-2 (4/11 as above); dim 1 keeps (3, 2, 1) vs (1, 2, 3) -> -1
    torch.testing.assert_close(ccc(pred, target, mask), torch.tensor([4 / 11, -1.0], dtype=F64))


def test_ccc_needs_two_valid_values() -> None:
    pred = torch.zeros(3, 2)
    mask = torch.tensor([[True, True], [True, False], [True, False]])
    with pytest.raises(ValueError, match=r"dimensions \[1\]"):
        ccc(pred, pred, mask)


def test_ccc_gradient_is_finite_with_mask() -> None:
    pred = torch.tensor([[0.5], [0.1], [0.7], [0.0]], requires_grad=True)
    target = torch.tensor([[0.4], [0.2], [0.6], [-5.0]])
    ccc_loss(pred, target, target != -5).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad[3].item() == 0.0


def test_task_loss_classification() -> None:
    # logits (0, 0): p = 1/2 for the true class -> CE = ln 2
    logits = torch.zeros(1, 2)
    assert task_loss(logits, torch.tensor([0]), "classification").item() == pytest.approx(
        math.log(2)
    )
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    target = torch.tensor([0, 2, 1, 1, 0])
    torch.testing.assert_close(
        task_loss(logits, target, "classification"), F.cross_entropy(logits, target)
    )
    mask = torch.tensor([True, False, True, True, False])
    torch.testing.assert_close(
        task_loss(logits, target, "classification", mask),
        F.cross_entropy(logits[mask], target[mask]),
    )


def test_task_loss_regression_and_unknown_task() -> None:
    pred = torch.tensor([[1.0], [2.0], [3.0]])
    target = torch.tensor([[2.0], [4.0], [6.0]])
    assert task_loss(pred, target, "regression").item() == pytest.approx(1 - 4 / 11)
    with pytest.raises(ValueError, match="'classification', 'regression'"):
        task_loss(pred, target, "ranking")


def _inputs(with_teacher: bool = True) -> LossInputs:
    gen = torch.Generator().manual_seed(1)
    z_s = torch.randn(8, 6, generator=gen, requires_grad=True)
    z_t = torch.randn(8, 6, generator=gen, requires_grad=True) if with_teacher else None
    logits = torch.randn(8, 2, generator=gen, requires_grad=True)
    target = torch.tensor([0, 1, 1, 0, 1, 0, 0, 1])
    return LossInputs(
        pred=logits, target=target, task="classification", z_student=z_s, z_teacher=z_t, topk=3
    )


def test_registry_names() -> None:
    assert {"task", "ot", "centroid", "pkd"} <= set(LOSS_TERMS)


def test_weighted_objective_is_the_weighted_sum() -> None:
    inputs = _inputs()
    weights = {"task": 0.8, "ot": 0.2, "centroid": 0.2}
    total, terms = weighted_objective(weights, inputs)
    task = F.cross_entropy(inputs.pred, inputs.target)
    ot_term = structural_ot_loss(inputs.z_teacher, inputs.z_student, k=3)
    cent = centroid_loss(inputs.z_teacher, inputs.z_student)
    torch.testing.assert_close(total, 0.8 * task + 0.2 * ot_term + 0.2 * cent)
    assert set(terms) == set(weights) and all(isinstance(v, float) for v in terms.values())
    assert terms["task"] == pytest.approx(task.item())
    assert terms["ot"] == pytest.approx(ot_term.item())
    assert terms["centroid"] == pytest.approx(cent.item())
    total.backward()
    assert inputs.z_teacher.grad is None
    assert inputs.z_student.grad is not None and inputs.pred.grad is not None


def test_weighted_objective_skips_zero_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_run(inputs: LossInputs) -> torch.Tensor:
        raise AssertionError("a term with weight 0 was computed")

    monkeypatch.setitem(LOSS_TERMS, "ot", must_not_run)
    total, terms = weighted_objective({"task": 1.0, "ot": 0.0}, _inputs(with_teacher=False))
    assert set(terms) == {"task"} and total.item() == pytest.approx(terms["task"])


def test_weighted_objective_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown loss terms \['otp'\].*centroid.*ot.*pkd.*task"):
        weighted_objective({"task": 1.0, "otp": 0.2}, _inputs())
    with pytest.raises(ValueError, match="'pkd' needs LossInputs.z_teacher"):
        weighted_objective({"task": 1.0, "pkd": 0.5}, _inputs(with_teacher=False))
    with pytest.raises(ValueError, match="finite and >= 0"):
        weighted_objective({"task": -1.0}, _inputs())
    with pytest.raises(ValueError, match="non-zero weight"):
        weighted_objective({"task": 0.0}, _inputs())


def test_weighted_objective_pkd_and_fixed_sinkhorn() -> None:
    inputs = _inputs()
    inputs.sinkhorn_iters = 25
    inputs.topk_largest = True
    total, terms = weighted_objective({"task": 1.0, "ot": 0.6, "pkd": 1.0}, inputs)
    expected_ot = structural_ot_loss(
        inputs.z_teacher, inputs.z_student, 3, largest=True, n_iters=25
    )
    assert terms["ot"] == pytest.approx(expected_ot.item())
    assert total.item() == pytest.approx(terms["task"] + 0.6 * terms["ot"] + terms["pkd"])
