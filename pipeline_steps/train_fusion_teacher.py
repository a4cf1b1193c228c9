"""Train the multimodal (joint) teacher on the frozen modality embeddings of one fold."""

from __future__ import annotations

import torch

from models.freeze import freeze
from models.fusion import build_fusion
from pipeline_steps.fold_data import modality_embeddings
from pipeline_steps.stage import StageContext, fit_stage, fold_parser, record_result, stage_context
from pipeline_steps.tasks import Targets
from pipeline_steps.tracking import stage_run
from pipeline_steps.trainer import FitResult, optimiser_step, save_checkpoint

STAGE = "train_fusion_teacher"


def fold_inputs(ctx: StageContext) -> tuple[torch.Tensor, Targets, torch.Tensor, Targets]:
    """(x_train (N,M,D), y_train, x_val, y_val) from the frozen modality embeddings."""
    splits = ctx.splits()
    x_train = modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, splits.train)
    x_val = modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, splits.val)
    targets = ctx.task.targets
    return x_train, targets(ctx.index, splits.train), x_val, targets(ctx.index, splits.val)


def make_fusion(ctx: StageContext, embed_dim: int) -> torch.nn.Module:
    name = ctx.params[STAGE]["fusion"]
    return build_fusion(name, len(ctx.modalities), embed_dim, ctx.n_outputs)


def fit_fusion(
    ctx: StageContext,
    data: tuple[torch.Tensor, Targets, torch.Tensor, Targets],
    inputs: list,
    run=None,  # noqa: ANN001
    name: str = "fusion",
    stage: str = STAGE,
) -> tuple[torch.nn.Module, FitResult]:
    """Train a new joint teacher on ``data`` = (x_train, y_train, x_val, y_val) with params
    ``train_fusion_teacher``; frozen on return. ``inputs``/``name``/``stage`` key its resume."""
    cfg = ctx.params[STAGE]
    task = ctx.task
    x_train, y_train, x_val, y_val = data
    model = make_fusion(ctx, x_train.shape[-1]).to(ctx.device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])

    def train_step(idx: torch.Tensor) -> dict[str, float]:
        pred, _ = model(x_train[idx].to(ctx.device))
        loss = task.loss(pred, y_train[idx].to(ctx.device))
        return {"loss": optimiser_step(optim, loss)}

    def validate() -> dict[str, float]:
        pred, _ = model(x_val.to(ctx.device))
        return task.validation_row(pred, y_val)

    result = fit_stage(
        ctx,
        cfg,
        model,
        len(x_train),
        train_step,
        validate,
        run,
        stage=stage,
        name=name,
        optimizer=optim,
        inputs=inputs,
    )
    return freeze(model), result


def main(argv: list[str] | None = None) -> None:
    args = fold_parser(__doc__).parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    cfg = ctx.params[STAGE]
    data = fold_inputs(ctx)
    with stage_run(ctx.params, ctx.dataset, ctx.layout, STAGE, fold=ctx.fold) as run:
        run.log_params(cfg)
        inputs = [ctx.layout.embeddings(ctx.fold, m) for m in ctx.modalities]
        model, result = fit_fusion(ctx, data, inputs, run)
        save_checkpoint(
            ctx.layout.fusion_teacher(ctx.fold),
            {
                "state_dict": model.cpu().state_dict(),
                "fusion": cfg["fusion"],
                "modalities": ctx.modalities,
                "embed_dim": data[0].shape[-1],
                "n_outputs": ctx.n_outputs,
                "best_epoch": result.best_epoch,
            },
        )
        summary = record_result(run, ctx, STAGE, "fusion", result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold}: {summary}")


if __name__ == "__main__":
    main()
