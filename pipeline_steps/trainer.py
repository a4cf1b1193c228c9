"""The epoch loop shared by every training stage: shuffled batches, validation-only model
selection with early stopping, per-epoch metrics to MLflow, atomic checkpoints."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline_steps.atomic import atomic_path
from pipeline_steps.progress import progress
from pipeline_steps.resume import Resume
from pipeline_steps.tracking import StageRun

StepFn = Callable[..., dict[str, float]]
ValFn = Callable[[], dict[str, float]]
FetchFn = Callable[[list[torch.Tensor]], Iterable[tuple[torch.Tensor, Any]]]


def train_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """A seeded permutation cut into batches; a last batch of one sample joins the previous one
    (structural losses need >= 2 samples). Evaluation never uses this: it keeps every sample."""
    order = torch.randperm(n, generator=generator)
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    yield from chunks


def eval_batches(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices covering all ``n`` samples (no drop_last)."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


@dataclass(frozen=True)
class SelectionRule:
    """Which epoch ``fit`` keeps: the best ``key`` of the validation row (``maximize`` or not),
    averaged over the last ``smooth`` epochs (a trailing mean, steadier on a small validation
    split), among epochs >= ``min_epochs`` (1-based; earlier ones are never kept). Ties go to
    the lower ``val_loss``. Early stopping counts only eligible epochs."""

    key: str
    maximize: bool = True
    min_epochs: int = 1
    smooth: int = 1

    def score(self, history: list[dict[str, float]]) -> tuple[float, float] | None:
        """Sort key of the last epoch of ``history`` (higher is better), None if ineligible."""
        if len(history) < self.min_epochs:
            return None
        window = [row[self.key] for row in history[-max(1, self.smooth) :]]
        value = sum(window) / len(window)
        return (value if self.maximize else -value, -history[-1].get("val_loss", 0.0))


@dataclass
class FitResult:
    best_state: dict
    best_epoch: int
    best_val: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def fit(
    model: nn.Module,
    *,
    n_train: int,
    batch_size: int,
    epochs: int,
    patience: int,
    generator: torch.Generator,
    train_step: StepFn,
    validate: ValFn,
    score_key: str | SelectionRule,
    run: StageRun | None = None,
    resume: Resume | None = None,
    amp_device: str | None = None,
    fetch: FetchFn | None = None,
) -> FitResult:
    """Train for up to ``epochs``; keep the state with the best validation ``score_key``
    (higher is better; ties go to the lower ``val_loss``), or as a :class:`SelectionRule` says.
    ``fetch``: given the epoch's index batches, yields ``(idx, data)`` per batch (e.g. from a
    ``DataLoader`` with workers) and ``train_step(idx, data)`` is called; without it
    ``train_step(idx)``. With ``resume``, the loop state is
    saved after every epoch and a matching saved state is continued (pipeline_steps.resume).
    ``amp_device`` ("cuda" or "cpu"): training forward passes under bfloat16 autocast (the
    losses still run in float32, see models.losses.weighted_objective); validation in float32."""
    rule = score_key if isinstance(score_key, SelectionRule) else SelectionRule(score_key)
    best: tuple[float, float] | None = None
    result = FitResult({}, -1, {})
    stale, start = 0, 0
    saved = resume.load(model, generator) if resume is not None else None
    if saved is not None:
        start, stale = saved["epoch"] + 1, saved["stale"]
        best = tuple(saved["best"]) if saved["best"] is not None else None
        result = FitResult(
            saved["best_state"], saved["best_epoch"], saved["best_val"], saved["history"]
        )
        if run is not None:  # the resumed job's run gets the whole curve
            for epoch, row in enumerate(result.history):
                run.log_metrics(row, step=epoch)
        if stale >= patience:  # it had stopped early: nothing left to train
            start = epochs
    for epoch in progress(range(start, epochs), desc="epochs"):
        model.train()
        sums: dict[str, float] = {}
        count = 0
        batches = list(train_batches(n_train, batch_size, generator))
        fetched = fetch(batches) if fetch is not None else ((idx, None) for idx in batches)
        for idx, data in fetched:
            with torch.autocast(amp_device or "cpu", torch.bfloat16, enabled=bool(amp_device)):
                logs = train_step(idx) if fetch is None else train_step(idx, data)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v * len(idx)
            count += len(idx)
        model.eval()
        with torch.no_grad():
            val = validate()
        row = {f"train_{k}": v / count for k, v in sums.items()} | val
        result.history.append(row)
        if run is not None:
            run.log_metrics(row, step=epoch)
        key = rule.score(result.history)
        if key is None:
            pass
        elif best is None or key > best:
            best, stale = key, 0
            result.best_state = copy.deepcopy(model.state_dict())
            result.best_epoch, result.best_val = epoch, dict(val)
        else:
            stale += 1
        if resume is not None:
            resume.save(
                epoch,
                model,
                generator,
                best=best,
                stale=stale,
                best_state=result.best_state,
                best_epoch=result.best_epoch,
                best_val=result.best_val,
                history=result.history,
            )
        if stale >= patience:
            break
    if best is None and result.history:  # fewer epochs than min_epochs: keep the last one
        result.best_state = copy.deepcopy(model.state_dict())
        result.best_epoch, result.best_val = len(result.history) - 1, dict(result.history[-1])
    model.load_state_dict(result.best_state)
    model.eval()
    if resume is not None:
        resume.clear()
    return result


def optimiser_step(optim: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One gradient step on ``loss``; returns its value for logging."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    return loss.item()


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """torch.save to a temporary name, then rename (never a half-written checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found; run the stage that writes it")
    return torch.load(path, map_location="cpu", weights_only=True)


# Artifacts for the report (pipeline_steps/report.py reads them; all optional there).


def write_history(path: str | Path, history: list[dict[str, float]]) -> None:
    """Per-epoch history as CSV (column ``epoch`` then the row keys, blank where a row lacks
    one): ``FitResult.history`` of a stage, written beside its metrics JSON as
    ``<stage>-<name>.history.csv`` so DVC can plot it and the report draws curves from it."""
    import csv

    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["epoch", *keys])
        writer.writeheader()
        for epoch, row in enumerate(history):
            writer.writerow({"epoch": epoch, **row})


def cosine_similarity_matrix(z: torch.Tensor) -> np.ndarray:
    """(N, D) representations -> (N, N) cosine similarities as float32 numpy."""
    z = torch.nn.functional.normalize(z.detach().float().cpu(), dim=-1)
    return (z @ z.T).numpy().astype("float32")


def write_similarity_snapshots(
    path: str | Path,
    progress: list[float],
    student: list[torch.Tensor],
    labels: torch.Tensor,
    teacher: torch.Tensor | None = None,
) -> None:
    """Student similarity matrices of one fixed batch during training (paper figure 4).

    ``progress``: training fractions of the snapshots, e.g. [0.0, 0.5, 1.0]; ``student``: the
    student's (N, D) representations of the same N samples at each of them; ``labels``: (N,)
    class indices; ``teacher``: optional (N, D) representations of the teacher it distils from.
    File (npz): ``progress`` (S,) float32, ``student`` (S, N, N) float32 cosine similarities,
    ``labels`` (N,) int64, and ``teacher`` (N, N) float32 when given.
    """
    arrays = {
        "progress": np.asarray(progress, dtype="float32"),
        "student": np.stack([cosine_similarity_matrix(z) for z in student]),
        "labels": labels.detach().cpu().numpy().astype("int64"),
    }
    if teacher is not None:
        arrays["teacher"] = cosine_similarity_matrix(teacher)
    _save_npz(path, arrays)


def write_teacher_embeddings(
    path: str | Path,
    names: list[str],
    before: torch.Tensor,
    after: torch.Tensor,
    labels: torch.Tensor,
) -> None:
    """Pool teachers' representations of the same N samples before and after alignment
    (paper figure 5). ``before``/``after``: (P, N, D) for the P pool teachers ``names``.
    File (npz): ``names`` (P,) str, ``before``/``after`` (P, N, D) float32, ``labels`` (N,) int64.
    """
    _save_npz(
        path,
        {
            "names": np.asarray(names, dtype=str),
            "before": before.detach().float().cpu().numpy(),
            "after": after.detach().float().cpu().numpy(),
            "labels": labels.detach().cpu().numpy().astype("int64"),
        },
    )


def _save_npz(path: str | Path, arrays: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
