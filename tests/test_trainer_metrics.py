"""Batching, validation-only model selection, metrics and the report's statistics."""

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_steps.metrics import classification_metrics
from pipeline_steps.report import build_table, summarise
from pipeline_steps.trainer import eval_batches, fit, train_batches


def test_train_batches_cover_all_and_never_leave_a_single_sample():
    g = torch.Generator().manual_seed(0)
    batches = list(train_batches(33, 16, g))
    assert [len(b) for b in batches] == [16, 17]
    assert sorted(torch.cat(batches).tolist()) == list(range(33))


def test_eval_batches_never_drop_samples():
    slices = list(eval_batches(33, 16))
    assert [s.stop - s.start for s in slices] == [16, 16, 1]


def test_fit_keeps_the_best_validation_epoch_and_stops_early():
    model = torch.nn.Linear(1, 1)
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.8])

    def step(idx):
        with torch.no_grad():
            model.weight += 1.0
        return {"loss": 1.0}

    def validate():
        return {"val_accuracy": next(scores), "val_loss": 0.0}

    result = fit(
        model,
        n_train=4,
        batch_size=4,
        epochs=5,
        patience=2,
        generator=torch.Generator().manual_seed(0),
        train_step=step,
        validate=validate,
        score_key="val_accuracy",
    )
    assert result.best_epoch == 1 and len(result.history) == 4
    assert float(result.best_state["weight"]) == pytest.approx(float(model.weight.detach()))
    assert not model.training


def test_classification_metrics_by_hand():
    # truth 0 0 1 1, predicted 0 1 1 1: accuracy 3/4.
    # F1 class 0: tp 1, support 2, predicted 1 -> 2/3; class 1: tp 2, support 2, predicted 3 -> 4/5
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]


def test_summary_by_hand():
    # values 0.6, 0.8: mean 0.7, sample std sqrt(0.02) = 0.141421; t(0.975, 1) = 12.7062
    s = summarise([0.6, 0.8], 0.95)
    assert s["mean"] == pytest.approx(0.7)
    assert s["std"] == pytest.approx(0.1414214, rel=1e-6)
    half = 12.7062047 * 0.1414214 / np.sqrt(2)
    assert s["ci_high"] == pytest.approx(0.7 + half, rel=1e-5)
    assert summarise([0.5], 0.95) == {"mean": 0.5, "std": 0.0, "ci_low": 0.5, "ci_high": 0.5}


def test_build_table_has_one_row_per_method():
    per_fold = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "fold": [0, 1, 0, 1],
            "accuracy": [0.5, 0.7, 0.6, 0.6],
            "macro_f1": [0.4, 0.6, 0.6, 0.6],
        }
    )
    table = build_table(per_fold, "biovid", 0.95)
    assert table["method"].tolist() == ["a", "b"]
    assert table.loc[1, "accuracy_std"] == 0.0
