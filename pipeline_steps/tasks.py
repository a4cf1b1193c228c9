"""The two tasks behind one interface: BioVid classification and Aff-Wild2 regression.

Classification: targets are class indices (N,); loss cross-entropy; metrics accuracy,
macro-F1 and confusion matrix; model selection on validation accuracy.

Regression (valence, arousal): a sample is a window of T frames with per-frame labels
(N, T, 2); frames labelled -5 are masked out of every loss and metric. Models predict one
(valence, arousal) pair per window, which is scored against every annotated frame of the
window (CCC over all frames); model selection on validation mean CCC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.losses import ccc, task_loss
from pipeline_steps.metrics import classification_metrics

if TYPE_CHECKING:
    import pandas as pd

UNANNOTATED = -5.0
DIMENSIONS = ("valence", "arousal")
# The test unit of each task (an index column): what the report's paired comparison pairs on.
UNIT = {"classification": "subject", "regression": "video"}


@dataclass
class Targets:
    """Labels of some samples: ``y`` (N,) long, or (N, T, 2) float with its ``mask``."""

    y: Tensor
    mask: Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: Tensor | slice) -> Targets:
        return Targets(self.y[idx], None if self.mask is None else self.mask[idx])

    def figure_labels(self) -> Tensor:
        """One integer per sample for ordering and colouring figures: the class, or for
        regression the sign of the mean annotated valence (1 = positive)."""
        if self.mask is None:
            return self.y
        valence = (self.y[..., 0] * self.mask[..., 0]).sum(1) / self.mask[..., 0].sum(1).clamp_min(
            1
        )
        return (valence > 0).long()

    def to(self, device: torch.device | str) -> Targets:
        return Targets(self.y.to(device), None if self.mask is None else self.mask.to(device))


def _frames(pred: Tensor, t: Targets) -> tuple[Tensor, Tensor, Tensor]:
    """Window predictions repeated over the window's frames, flattened with labels and mask."""
    n, frames, dims = t.y.shape
    pred = pred[:, None, :].expand(n, frames, dims).reshape(-1, dims)
    return pred, t.y.reshape(-1, dims), t.mask.reshape(-1, dims)


class Task:
    """What differs between classification and regression, behind one interface."""

    def __init__(self, name: str, classes: list[str]) -> None:
        if name not in ("classification", "regression"):
            raise ValueError(f"unknown task {name!r}; allowed: classification, regression")
        self.name = name
        self.classes = list(classes)

    @property
    def is_classification(self) -> bool:
        return self.name == "classification"

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.is_classification else len(DIMENSIONS)

    @property
    def score_key(self) -> str:
        """Validation metric used for model selection (higher is better)."""
        return "val_accuracy" if self.is_classification else "val_ccc_mean"

    def targets(self, index: pd.DataFrame, ids: list[str]) -> Targets:
        table = index.set_index("sample_id").loc[ids]
        if self.is_classification:
            return Targets(torch.as_tensor(table["label"].to_numpy(), dtype=torch.long))
        y = np.stack(
            [np.stack([np.asarray(v, np.float32) for v in table[d]]) for d in DIMENSIONS], -1
        )
        y = torch.from_numpy(y)
        return Targets(y, y != UNANNOTATED)

    def loss_inputs(self, pred: Tensor, t: Targets) -> tuple[Tensor, Tensor, Tensor | None]:
        """(pred, target, mask) as models.losses.task_loss takes them for this task."""
        if self.is_classification:
            return pred, t.y, None
        return _frames(pred, t)

    def loss(self, pred: Tensor, t: Targets) -> Tensor:
        pred, target, mask = self.loss_inputs(pred, t)
        return task_loss(pred, target, self.name, mask)

    def per_sample_loss(self, pred: Tensor, t: Targets) -> Tensor:
        """Loss of each sample alone (teacher selection per sample)."""
        if self.is_classification:
            return F.cross_entropy(pred, t.y, reduction="none")
        err = (pred[:, None, :] - t.y).abs() * t.mask
        return err.sum((1, 2)) / t.mask.sum((1, 2)).clamp_min(1)

    def metrics(self, pred: Tensor, t: Targets) -> dict:
        """Scores of window predictions ``pred`` (N, n_outputs) against ``t``."""
        pred = pred.detach().cpu()
        t = t.to("cpu")
        if self.is_classification:
            return classification_metrics(t.y.numpy(), pred.argmax(1).numpy(), self.n_outputs)
        values = ccc(*_frames(pred, t)).tolist()
        out = {f"ccc_{d}": float(v) for d, v in zip(DIMENSIONS, values, strict=True)}
        return out | {"ccc_mean": float(np.mean(values)), "n": len(t)}

    def validation_row(self, pred: Tensor, t: Targets) -> dict[str, float]:
        """Validation loss and the selection metric (plus the other scalar scores)."""
        m = self.metrics(pred, t)
        row = {"val_loss": float(self.loss(pred.detach().cpu(), t.to("cpu")))}
        return row | {f"val_{k}": v for k, v in m.items() if isinstance(v, float)}
