"""Align the modality teachers to the joint teacher's space (adapters + self-distillation),
starting from the trained fusion teacher, and cache the pool's outputs for the student.

Cache: ``fold<k>/teachers/pool_outputs.pt`` holds, for the fold's train and val samples, each
pool teacher's embedding and prediction. Its key is the pool checkpoint it sits beside (same
fold, same upstream params): every student method of the fold reads it instead of re-running
the teachers, and Snakemake/DVC rebuild it whenever the pool is retrained.
"""

from __future__ import annotations

import torch

from models.freeze import freeze
from models.teacher_pool import TeacherPool
from pipeline_steps.fold_data import modality_embeddings
from pipeline_steps.stage import fit_stage, fold_parser, record_result, stage_context
from pipeline_steps.tracking import stage_run
from pipeline_steps.train_fusion_teacher import fold_inputs, make_fusion
from pipeline_steps.trainer import (
    load_checkpoint,
    optimiser_step,
    save_checkpoint,
    write_teacher_embeddings,
)

STAGE = "align_teacher_pool"


def main(argv: list[str] | None = None) -> None:
    args = fold_parser(__doc__).parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    cfg = ctx.params[STAGE]
    task = ctx.task
    x_train, y_train, x_val, y_val = fold_inputs(ctx)
    embed_dim = x_train.shape[-1]
    fusion = make_fusion(ctx, embed_dim)
    fusion.load_state_dict(load_checkpoint(ctx.layout.fusion_teacher(ctx.fold))["state_dict"])
    pool = TeacherPool(
        fusion, embed_dim, len(ctx.modalities), ctx.n_outputs, ctx.modalities, cfg["adapter_hidden"]
    ).to(ctx.device)
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
        out = pool(x_val.to(ctx.device))
        row = task.validation_row(out.pred[-1], y_val)  # the joint teacher selects
        for name, pred in zip(out.names, out.pred, strict=True):
            score = task.validation_row(pred, y_val)[task.score_key]
            row[f"{task.score_key}_{name}"] = score
        return row

    with torch.no_grad():
        z_before = pool(x_val.to(ctx.device)).z.cpu()
    with stage_run(ctx.params, ctx.dataset, ctx.layout, STAGE, fold=ctx.fold) as run:
        run.log_params(cfg)
        embedding_files = [ctx.layout.embeddings(ctx.fold, m) for m in ctx.modalities]
        result = fit_stage(
            ctx,
            cfg,
            pool,
            len(x_train),
            train_step,
            validate,
            run,
            stage=STAGE,
            name="pool",
            optimizer=optim,
            inputs=[ctx.layout.fusion_teacher(ctx.fold), *embedding_files],
        )
        freeze(pool)
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
        ids = splits.train + splits.val
        with torch.no_grad():
            out = pool(modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, ids))
        save_checkpoint(
            ctx.layout.pool_outputs(ctx.fold),
            {"sample_ids": ids, "names": out.names, "z": out.z, "pred": out.pred},
        )
        summary = record_result(run, ctx, STAGE, "pool", result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold}: {summary}")


if __name__ == "__main__":
    main()
