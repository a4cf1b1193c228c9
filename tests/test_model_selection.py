"""The epoch a stage keeps (trainer.SelectionRule): a key, its direction, a trailing mean and a
minimum number of epochs; the student's rule; the alignment stage's rule; and a fetch hook
that feeds each batch's data in the trainer's order."""

from __future__ import annotations

import torch

from pipeline_steps.train_student import selection_rule
from pipeline_steps.trainer import SelectionRule, fit

LOSSES = [0.2, 0.9, 0.5, 0.4, 0.45, 0.41, 0.8, 0.9]


def rows(values: list[float]) -> list[dict[str, float]]:
    return [{"val_loss": v, "val_accuracy": 1.0 - v} for v in values]


def kept(rule: SelectionRule, values: list[float], patience: int = 100) -> int:
    """The epoch ``fit`` keeps when validation returns ``values`` in turn."""
    model = torch.nn.Linear(1, 1)
    history = iter(rows(values))
    result = fit(
        model,
        n_train=4,
        batch_size=2,
        epochs=len(values),
        patience=patience,
        generator=torch.Generator().manual_seed(0),
        train_step=lambda idx: {"loss": 0.0},
        validate=lambda: next(history),
        score_key=rule,
    )
    return result.best_epoch


def test_plain_key_keeps_the_best_epoch() -> None:
    assert kept(SelectionRule("val_accuracy"), LOSSES) == 0
    assert kept(SelectionRule("val_loss", maximize=False), LOSSES) == 0


def test_min_epochs_skips_the_lucky_start() -> None:
    assert kept(SelectionRule("val_loss", maximize=False, min_epochs=2), LOSSES) == 3


def test_trailing_mean_prefers_a_stable_stretch() -> None:
    # trailing means of 2 from epoch 2 on: 0.7, 0.45, 0.425, 0.43, 0.605, 0.85
    rule = SelectionRule("val_loss", maximize=False, min_epochs=3, smooth=2)
    assert kept(rule, LOSSES) == 4
    assert rule.score(rows(LOSSES[:5]))[0] == -(0.4 + 0.45) / 2
    assert rule.score(rows(LOSSES[:2])) is None


def test_fewer_epochs_than_min_epochs_keeps_the_last() -> None:
    assert kept(SelectionRule("val_loss", maximize=False, min_epochs=10), LOSSES[:3]) == 2


def test_patience_counts_eligible_epochs_only() -> None:
    rule = SelectionRule("val_loss", maximize=False, min_epochs=4)
    assert kept(rule, [0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.3, 0.2], patience=2) == 3


def test_student_rule_comes_from_its_params() -> None:
    rule = selection_rule({"min_epochs": 10, "smooth_epochs": 3})
    assert rule == SelectionRule("val_loss", maximize=False, min_epochs=10, smooth=3)


def test_fetch_feeds_each_batch_in_the_trainers_order() -> None:
    seen: list[tuple[list[int], list[int]]] = []

    def fetch(batches):  # noqa: ANN001, ANN202
        for idx in batches:
            yield idx, idx * 10

    def step(idx: torch.Tensor, data: torch.Tensor) -> dict[str, float]:
        seen.append((idx.tolist(), data.tolist()))
        return {"loss": 0.0}

    fit(
        torch.nn.Linear(1, 1),
        n_train=5,
        batch_size=2,
        epochs=1,
        patience=1,
        generator=torch.Generator().manual_seed(0),
        train_step=step,
        validate=lambda: {"val_accuracy": 0.5, "val_loss": 0.5},
        score_key="val_accuracy",
        fetch=fetch,
    )
    assert sorted(i for idx, _ in seen for i in idx) == [0, 1, 2, 3, 4]
    assert all([10 * i for i in idx] == data for idx, data in seen)
