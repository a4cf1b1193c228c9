"""An interrupted training stage resumes after its last finished epoch and ends exactly where an
uninterrupted run ends (CPU); a changed key restarts from scratch; the state file is removed."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline_steps.resume import Resume, resume_key
from pipeline_steps.runtime import seed_everything
from pipeline_steps.trainer import fit

EPOCHS = 6


class SimulatedKillError(RuntimeError):
    pass


def _run(path: Path, key: str, stop_at_step: int | None = None):
    """A small stage: seeded init, dropout (global RNG), Adam, shuffled batches."""
    generator = seed_everything(123)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
    optim = torch.optim.Adam(model.parameters(), lr=0.05)
    data = torch.randn(40, 4, generator=torch.Generator().manual_seed(1))
    labels = (data[:, 0] > 0).long()
    extra: dict = {"validations": 0}
    steps = {"n": 0}

    def train_step(idx: torch.Tensor) -> dict[str, float]:
        if stop_at_step is not None and steps["n"] == stop_at_step:
            raise SimulatedKillError("simulated kill")
        steps["n"] += 1
        loss = torch.nn.functional.cross_entropy(model(data[idx]), labels[idx])
        optim.zero_grad()
        loss.backward()
        optim.step()
        return {"loss": loss.item()}

    def validate() -> dict[str, float]:
        extra["validations"] += 1
        pred = model(data[:10]).argmax(1)
        acc = (pred == labels[:10]).float().mean().item()
        return {"val_accuracy": acc, "val_loss": -acc}

    result = fit(
        model,
        n_train=len(data),
        batch_size=8,
        epochs=EPOCHS,
        patience=EPOCHS,
        generator=generator,
        train_step=train_step,
        validate=validate,
        score_key="val_accuracy",
        resume=Resume(path, key, optim, extra),
    )
    return result, model, extra


def test_interrupted_fit_resumes_to_identical_results(tmp_path: Path) -> None:
    reference, ref_model, ref_extra = _run(tmp_path / "ref.pt", "k")
    assert not (tmp_path / "ref.pt").exists()  # removed once training finished

    path = tmp_path / "stage.pt"
    with pytest.raises(SimulatedKillError):
        _run(path, "k", stop_at_step=5 * 3 + 2)  # 5 batches per epoch: dies inside epoch 3
    saved = torch.load(path, weights_only=True)
    assert saved["epoch"] == 2 and saved["extra"]["validations"] == 3

    resumed, model, extra = _run(path, "k")
    assert resumed.history == reference.history
    assert resumed.best_epoch == reference.best_epoch
    for name, value in reference.best_state.items():
        assert torch.equal(resumed.best_state[name], value), name
    for a, b in zip(model.parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert extra == ref_extra  # the stage's own state came back too
    assert not path.exists()


def test_changed_key_starts_from_scratch(tmp_path: Path, capsys) -> None:
    path = tmp_path / "stage.pt"
    with pytest.raises(SimulatedKillError):
        _run(path, "old", stop_at_step=7)
    result, _, extra = _run(path, "new")
    assert "starting from scratch" in capsys.readouterr().out
    assert len(result.history) == EPOCHS and extra["validations"] == EPOCHS


def test_resume_key_follows_params_and_inputs(tmp_path: Path) -> None:
    shard = tmp_path / "features.parquet"
    shard.write_bytes(b"a")
    key = resume_key("stage", {"lr": 0.1}, [shard])
    assert key == resume_key("stage", {"lr": 0.1}, [shard])
    assert key != resume_key("stage", {"lr": 0.2}, [shard])
    shard.write_bytes(b"ab")  # an input rewritten by an upstream rerun
    assert key != resume_key("stage", {"lr": 0.1}, [shard])
