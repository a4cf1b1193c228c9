"""Mixed precision (run.amp): bfloat16 autocast for the model, float32 for every loss term."""

from __future__ import annotations

import torch

from models.losses import LossInputs, weighted_objective
from models.student import Student
from pipeline_steps.trainer import fit

WEIGHTS = {"task": 0.8, "ot": 0.2, "centroid": 0.2}


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 12, generator=g), torch.randint(0, 2, (16,), generator=g)


def test_losses_run_in_float32_under_autocast() -> None:
    f_v, y = _batch()
    z_t = torch.randn(16, 12, generator=torch.Generator().manual_seed(1))
    model = Student(12, 16, 12, 2)
    with torch.autocast("cpu", torch.bfloat16):
        pred, z_s = model(f_v)
        assert z_s.dtype == torch.bfloat16  # the model really ran in reduced precision
        inputs = LossInputs(pred, y, "classification", z_student=z_s, z_teacher=z_t, topk=6)
        loss, terms = weighted_objective(WEIGHTS, inputs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the float32 losses of the bf16 embeddings match float32 losses of the same values
    ref, ref_terms = weighted_objective(
        WEIGHTS,
        LossInputs(pred.float(), y, "classification", z_student=z_s.float(), z_teacher=z_t, topk=6),
    )
    assert abs(ref.item() - loss.item()) < 1e-5
    assert ref_terms == terms


def test_fit_with_amp_trains() -> None:
    torch.manual_seed(0)
    f_v, y = _batch()
    model = Student(12, 16, 12, 2)
    optim = torch.optim.Adam(model.parameters(), lr=0.02)

    def step(idx: torch.Tensor) -> dict[str, float]:
        pred, _ = model(f_v[idx])
        loss = torch.nn.functional.cross_entropy(pred, y[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
        return {"loss": loss.item()}

    def validate() -> dict[str, float]:
        loss = torch.nn.functional.cross_entropy(model(f_v)[0], y).item()
        return {"val_accuracy": -loss, "val_loss": loss}

    result = fit(
        model,
        n_train=16,
        batch_size=8,
        epochs=15,
        patience=15,
        generator=torch.Generator().manual_seed(0),
        train_step=step,
        validate=validate,
        score_key="val_accuracy",
        amp_device="cpu",
    )
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
