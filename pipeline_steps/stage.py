"""What every training/evaluation step sets up: params, dataset, fold, seed, device, index."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pipeline_steps.config import (
    dataset_params,
    load_params,
    shared_run_params,
    step_parser,
    student_seeds,
)
from pipeline_steps.fold_data import Splits, load_index
from pipeline_steps.job_matrix import n_folds
from pipeline_steps.layout import Layout, layout_for
from pipeline_steps.runtime import resolve_device, seed_everything, set_threads
from pipeline_steps.tasks import Task

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class StageContext:
    params: dict
    dataset: str
    ds: dict
    layout: Layout
    fold: int
    device: torch.device
    generator: torch.Generator
    index: pd.DataFrame
    seed: int | None = None  # a student stage's seed (run.seeds); None: a teacher stage

    @property
    def modalities(self) -> list[str]:
        return list(self.ds["modalities"])

    @property
    def task(self) -> Task:
        return Task(self.ds["task"], self.ds["classes"])

    @property
    def n_outputs(self) -> int:
        return self.task.n_outputs

    def splits(self) -> Splits:
        return Splits.of(self.index, self.fold)


def fold_parser(description: str, seeded: bool = False) -> argparse.ArgumentParser:
    """``--fold``; ``seeded`` (a student stage): also ``--seed``, the student seed."""
    parser = step_parser(description)
    parser.add_argument("--fold", type=int, required=True, help="fold number (0-based)")
    if seeded:
        parser.add_argument(
            "--seed",
            type=int,
            default=None,
            help="student seed (default: the first of run.seeds)",
        )
    return parser


def resolve_seed(params: dict, seed: int | None) -> int:
    """A student stage's seed: ``seed``, or the first of ``run.seeds``."""
    if seed is None:
        return student_seeds(params)[0]
    if seed < 0:
        raise SystemExit(f"--seed {seed}: a student seed is a non-negative integer")
    return seed


def stage_context(args: argparse.Namespace, salt: str = "") -> StageContext:
    """Load and validate params, seed everything (seed + fold + stage salt), read the index.

    The seed is ``run.seed`` for a teacher stage, the student seed for a stage whose parser
    has ``--seed`` (``fold_parser(seeded=True)``): never the method, so every method of a
    seed gets the same initialisation and batches."""
    params = load_params(args.params)
    ds = dataset_params(params, args.dataset)
    count = n_folds(params, args.dataset)
    if not 0 <= args.fold < count:
        raise SystemExit(
            f"--fold {args.fold} is outside 0..{count - 1} (index_dataset.n_folds, or one fold "
            "per subject with index_dataset.loso)"
        )
    set_threads()
    student_seed = resolve_seed(params, args.seed) if hasattr(args, "seed") else None
    base = params["run"]["seed"] if student_seed is None else student_seed
    generator = seed_everything(base * 1000 + args.fold + sum(map(ord, salt)))
    layout = layout_for(params, args.dataset)
    return StageContext(
        params=params,
        dataset=args.dataset,
        ds=ds,
        layout=layout,
        fold=args.fold,
        device=resolve_device(params["run"]["device"]),
        generator=generator,
        index=load_index(layout),
        seed=student_seed,
    )


def fit_stage(  # noqa: ANN201
    ctx: StageContext,
    cfg: dict,
    model,  # noqa: ANN001
    n_train: int,
    train_step,  # noqa: ANN001
    validate,  # noqa: ANN001
    run,  # noqa: ANN001
    *,
    stage: str,
    name: str,
    optimizer: torch.optim.Optimizer,
    inputs: list[Path],
    extra: dict | None = None,
    selection=None,  # noqa: ANN001
    fetch=None,  # noqa: ANN001
):
    """``trainer.fit`` with the stage's batch size, epochs, patience, seeded data order, the
    task's validation metric for model selection (or ``selection``, a ``SelectionRule``), and
    per-epoch resume state keyed by the stage, its params and its ``inputs`` (``extra``: the
    stage's own state to keep too; ``fetch``: see ``trainer.fit``)."""
    from pipeline_steps.resume import Resume, resume_key
    from pipeline_steps.trainer import fit

    key_params = {
        "section": cfg,
        "run": shared_run_params(ctx.params),
        "dataset": ctx.ds,
        "fold": ctx.fold,
        "seed": ctx.seed,
    }
    resume = Resume(
        ctx.layout.resume(ctx.fold, stage, name, ctx.seed),
        resume_key(f"{stage}-{name}", key_params, [ctx.layout.index, *inputs]),
        optimizer,
        extra if extra is not None else {},
    )
    return fit(
        model,
        n_train=n_train,
        batch_size=cfg["batch_size"],
        epochs=cfg["epochs"],
        patience=cfg["patience"],
        generator=ctx.generator,
        train_step=train_step,
        validate=validate,
        score_key=selection if selection is not None else ctx.task.score_key,
        run=run,
        resume=resume,
        amp_device=ctx.device.type if ctx.params["run"]["amp"] else None,
        fetch=fetch,
    )


def record_result(run, ctx: StageContext, stage: str, name: str, result) -> dict:  # noqa: ANN001
    """Log the selected epoch's validation metrics; write the metrics JSON and history CSV."""
    from pipeline_steps.atomic import write_json
    from pipeline_steps.trainer import write_history

    summary = {"best_epoch": result.best_epoch, **result.best_val}
    run.log_metrics({f"best_{k}": v for k, v in result.best_val.items()})
    path = ctx.layout.metrics(ctx.fold, stage, name, ctx.seed)
    write_json(path, summary)
    history = ctx.layout.history(ctx.fold, stage, name, ctx.seed)
    write_history(history, result.history)
    run.log_artifact(path)
    run.log_artifact(history)
    return summary
