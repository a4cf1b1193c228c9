"""Align the modality teachers to the joint teacher's space (adapters + self-distillation),
starting from the trained fusion teacher, and cache the pool's outputs for the student.

Model selection: the epoch with the lowest validation alignment objective (the loss it
optimises, METHOD 4.6, on the validation samples), not the joint teacher's score.

Cache: ``fold<k>/teachers/pool_outputs.pt`` holds, for the fold's train and val samples, each
pool teacher's embedding and prediction. Validation samples are scored by the fold's pool,
which never trained on them. With ``cross_fit: K`` (K >= 2) the training samples are scored
out of fold: their training subjects are dealt into K parts and, for each part, the whole
teacher chain (every modality teacher, the joint teacher, the aligned pool) is retrained on
the other parts, with this stage's params and the same validation split, and scores only the
held-out part. No training sample's cached output then comes from a teacher that trained on
it; the cost is K more trainings of every teacher of the fold, run in this job. With
``cross_fit: 0`` the training samples are scored by the fold's pool (in sample).
The cache also records, per sample, the part that scored it (-1: the fold's pool) and, per
part, the ids its teachers trained on. Every student method of the fold reads this cache.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from models.freeze import freeze
from models.teacher_pool import PoolOutput, TeacherPool
from pipeline_steps.fold_data import modality_embeddings
from pipeline_steps.stage import (
    StageContext,
    fit_stage,
    fold_parser,
    record_result,
    stage_context,
)
from pipeline_steps.tasks import Targets
from pipeline_steps.tracking import stage_run
from pipeline_steps.train_fusion_teacher import fit_fusion, fold_inputs, make_fusion
from pipeline_steps.train_modality_teacher import feature_paths, fit_modality_teacher
from pipeline_steps.trainer import (
    FitResult,
    SelectionRule,
    load_checkpoint,
    optimiser_step,
    save_checkpoint,
    write_teacher_embeddings,
)

STAGE = "align_teacher_pool"
OBJECTIVE = "val_objective"


def fit_pool(
    ctx: StageContext,
    fusion: torch.nn.Module,
    data: tuple[torch.Tensor, Targets, torch.Tensor, Targets],
    inputs: list,
    run=None,  # noqa: ANN001
    name: str = "pool",
) -> tuple[TeacherPool, FitResult, torch.Tensor]:
    """Adapters + heads around ``fusion``, trained by self-distillation on ``data`` =
    (x_train, y_train, x_val, y_val); keeps the epoch of lowest validation objective. Returns
    the frozen pool, the fit, and the pool's validation embeddings before training (P, N, D)."""
    cfg = ctx.params[STAGE]
    task = ctx.task
    x_train, y_train, x_val, y_val = data
    pool = TeacherPool(
        fusion,
        x_train.shape[-1],
        len(ctx.modalities),
        ctx.n_outputs,
        ctx.modalities,
        cfg["adapter_hidden"],
    ).to(ctx.device)
    for p in pool.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        z_before = pool(x_val.to(ctx.device)).z.cpu()
    fusion_ids = {id(p) for p in pool.fusion.parameters()}
    optim = torch.optim.Adam(
        [
            {"params": list(pool.fusion.parameters()), "lr": cfg["lr_fusion"]},
            {
                "params": [p for p in pool.parameters() if id(p) not in fusion_ids],
                "lr": cfg["lr_adapters"],
            },
        ]
    )

    def train_step(idx: torch.Tensor) -> dict[str, float]:
        loss, terms = pool.alignment_objective(
            x_train[idx].to(ctx.device), y_train[idx].to(ctx.device), task.loss
        )
        return {"loss": optimiser_step(optim, loss), **terms}

    def validate() -> dict[str, float]:
        xv, yv = x_val.to(ctx.device), y_val.to(ctx.device)
        objective, parts = pool.alignment_objective(xv, yv, task.loss)
        out = pool(xv)
        row = task.validation_row(out.pred[-1].cpu(), y_val)  # the joint teacher's scores
        row[OBJECTIVE] = float(objective)
        row["val_align"] = parts["align"]
        for name, pred in zip(out.names, out.pred, strict=True):
            score = task.validation_row(pred.cpu(), y_val)[task.score_key]
            row[f"{task.score_key}_{name}"] = score
        return row

    result = fit_stage(
        ctx,
        cfg,
        pool,
        len(x_train),
        train_step,
        validate,
        run,
        stage=STAGE,
        name=name,
        optimizer=optim,
        inputs=inputs,
        selection=SelectionRule(OBJECTIVE, maximize=False),
    )
    return freeze(pool), result, z_before


def subject_parts(index: pd.DataFrame, ids: list[str], k: int, seed: int) -> list[list[str]]:
    """``ids`` dealt into ``k`` parts by subject (no subject in two parts; a seeded order,
    subjects dealt in turn), each part's ids in the order of ``ids``."""
    subject = index.set_index("sample_id").loc[ids, "subject"].astype(str)
    subjects = sorted(subject.unique())
    if len(subjects) < k:
        raise ValueError(
            f"align_teacher_pool.cross_fit is {k} but the fold has {len(subjects)} training "
            "subjects; lower cross_fit or raise the number of subjects"
        )
    order = np.random.default_rng(seed).permutation(len(subjects))
    part_of = {subjects[j]: n % k for n, j in enumerate(order)}
    return [[i for i in ids if part_of[subject[i]] == p] for p in range(k)]


def cross_fitted_outputs(ctx: StageContext, k: int) -> tuple[PoolOutput, list[int], list[list]]:
    """Pool outputs of the fold's training samples, each from a teacher chain trained without
    its subject (see module docstring); also each sample's part and each part's training ids."""
    splits = ctx.splits()
    task = ctx.task
    parts = subject_parts(ctx.index, splits.train, k, ctx.params["run"]["seed"] + ctx.fold)
    batch = ctx.params["train_modality_teacher"]["batch_size"]
    pos = {s: i for i, s in enumerate(splits.train)}
    names, z, pred, part_of, fitted_on = None, None, None, [-1] * len(pos), []
    for p, held in enumerate(parts):
        held_set = set(held)
        fit_ids = [s for s in splits.train if s not in held_set]
        fitted_on.append(fit_ids)
        stacks = {"fit": [], "val": [], "held": []}
        for m in ctx.modalities:
            teacher = fit_modality_teacher(
                ctx, m, fit_ids, splits.val, name=f"{m}-part{p}", stage=STAGE
            )
            for key, ids in (("fit", fit_ids), ("val", splits.val), ("held", held)):
                stacks[key].append(teacher.embed(ctx.params, ctx.layout, m, ids, batch))
        x = {key: torch.stack(v, dim=1) for key, v in stacks.items()}
        data = (
            x["fit"],
            task.targets(ctx.index, fit_ids),
            x["val"],
            task.targets(ctx.index, splits.val),
        )
        inputs = [path for m in ctx.modalities for path in feature_paths(ctx.params, ctx.layout, m)]
        fusion, _ = fit_fusion(ctx, data, inputs, name=f"fusion-part{p}", stage=STAGE)
        pool, _, _ = fit_pool(ctx, fusion, data, inputs, name=f"pool-part{p}")
        with torch.no_grad():
            out = pool.cpu()(x["held"])
        if z is None:
            names = out.names
            z = torch.empty(out.z.shape[0], len(pos), out.z.shape[-1])
            pred = torch.empty(out.pred.shape[0], len(pos), out.pred.shape[-1])
        rows = torch.as_tensor([pos[s] for s in held])
        z[:, rows], pred[:, rows] = out.z, out.pred
        for s in held:
            part_of[pos[s]] = p
    return PoolOutput(names, z, pred), part_of, fitted_on


def main(argv: list[str] | None = None) -> None:
    args = fold_parser(__doc__).parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    cfg = ctx.params[STAGE]
    data = fold_inputs(ctx)
    x_val, y_val = data[2], data[3]
    embed_dim = data[0].shape[-1]
    fusion = make_fusion(ctx, embed_dim)
    fusion.load_state_dict(load_checkpoint(ctx.layout.fusion_teacher(ctx.fold))["state_dict"])
    with stage_run(ctx.params, ctx.dataset, ctx.layout, STAGE, fold=ctx.fold) as run:
        run.log_params(cfg)
        embedding_files = [ctx.layout.embeddings(ctx.fold, m) for m in ctx.modalities]
        inputs = [ctx.layout.fusion_teacher(ctx.fold), *embedding_files]
        pool, result, z_before = fit_pool(ctx, fusion, data, inputs, run)
        pool.cpu()
        save_checkpoint(
            ctx.layout.teacher_pool(ctx.fold),
            {
                "state_dict": pool.state_dict(),
                "fusion": ctx.params["train_fusion_teacher"]["fusion"],
                "modalities": ctx.modalities,
                "embed_dim": embed_dim,
                "n_outputs": ctx.n_outputs,
                "adapter_hidden": cfg["adapter_hidden"],
            },
        )
        with torch.no_grad():
            out_val = pool(x_val)
        write_teacher_embeddings(
            ctx.layout.pool_embeddings(ctx.fold),
            out_val.names,
            z_before,
            out_val.z,
            y_val.figure_labels(),
        )
        splits = ctx.splits()
        with torch.no_grad():
            out = pool(modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, splits.train))
        part_of, fitted_on = [-1] * len(splits.train), []
        if cfg["cross_fit"]:
            out, part_of, fitted_on = cross_fitted_outputs(ctx, cfg["cross_fit"])
        save_checkpoint(
            ctx.layout.pool_outputs(ctx.fold),
            {
                "sample_ids": splits.train + splits.val,
                "names": out.names,
                "z": torch.cat([out.z, out_val.z], dim=1),
                "pred": torch.cat([out.pred, out_val.pred], dim=1),
                "part": part_of + [-1] * len(splits.val),
                "part_train_ids": fitted_on,
            },
        )
        summary = record_result(run, ctx, STAGE, "pool", result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold}: {summary}")


if __name__ == "__main__":
    main()
