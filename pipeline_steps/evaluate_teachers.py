"""Evaluate the teachers on the fold's test subjects, and the joint teacher with each
privileged modality missing (robustness table).

Missing modality: that modality's embedding is replaced by its mean over the fold's
TRAINING samples (what a deployed fusion model could use without the sensor). Writes
``fold<k>/eval/teachers.json``.
"""

from __future__ import annotations

import torch

from models.teacher_pool import TeacherPool
from pipeline_steps.atomic import write_json
from pipeline_steps.fold_data import VIDEO, modality_embeddings
from pipeline_steps.folds import split_ids
from pipeline_steps.stage import StageContext, fold_parser, stage_context
from pipeline_steps.tasks import Targets
from pipeline_steps.tracking import stage_run
from pipeline_steps.train_fusion_teacher import make_fusion
from pipeline_steps.train_modality_teacher import teacher_from_checkpoint
from pipeline_steps.trainer import load_checkpoint

STAGE = "evaluate_teachers"


def scores(ctx: StageContext, pred: torch.Tensor, y: Targets) -> dict[str, float]:
    m = ctx.task.metrics(pred, y)
    return {k: v for k, v in m.items() if k != "confusion_matrix"}


def modality_heads(ctx: StageContext, emb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each modality teacher's own prediction from its stored embedding."""
    out = {}
    for i, modality in enumerate(ctx.modalities):
        teacher = teacher_from_checkpoint(load_checkpoint(ctx.layout.teacher(ctx.fold, modality)))
        out[modality] = teacher.head(emb[:, i])
    return out


@torch.no_grad()
def evaluate(ctx: StageContext) -> dict:
    test_ids = split_ids(ctx.index, ctx.fold, "test")
    train_ids = ctx.splits().train
    y = ctx.task.targets(ctx.index, test_ids)
    emb = modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, test_ids)
    train_mean = modality_embeddings(ctx.layout, ctx.fold, ctx.modalities, train_ids).mean(0)
    result: dict = {"fold": ctx.fold, "n_test": len(test_ids)}
    result["modality_teachers"] = {
        m: scores(ctx, pred, y) for m, pred in modality_heads(ctx, emb).items()
    }
    fusion = make_fusion(ctx, emb.shape[-1]).eval()
    fusion.load_state_dict(load_checkpoint(ctx.layout.fusion_teacher(ctx.fold))["state_dict"])
    result["fusion"] = scores(ctx, fusion(emb)[0], y)
    missing = {}
    for i, modality in enumerate(ctx.modalities):
        if modality == VIDEO:
            continue
        imputed = emb.clone()
        imputed[:, i] = train_mean[i]
        missing[modality] = scores(ctx, fusion(imputed)[0], y)
    result["fusion_without"] = missing
    pool_ckpt = load_checkpoint(ctx.layout.teacher_pool(ctx.fold))
    pool = TeacherPool(
        make_fusion(ctx, emb.shape[-1]),
        emb.shape[-1],
        len(ctx.modalities),
        ctx.n_outputs,
        ctx.modalities,
        pool_ckpt["adapter_hidden"],
    ).eval()
    pool.load_state_dict(pool_ckpt["state_dict"])
    out = pool(emb)
    pairs = zip(out.names, out.pred, strict=True)
    result["pool"] = {name: scores(ctx, pred, y) for name, pred in pairs}
    return result


def main(argv: list[str] | None = None) -> None:
    args = fold_parser(__doc__).parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    result = evaluate(ctx)
    path = ctx.layout.teacher_evaluation(ctx.fold)
    with stage_run(ctx.params, ctx.dataset, ctx.layout, STAGE, fold=ctx.fold) as run:
        key = ctx.task.score_key.removeprefix("val_")
        flat = {f"test_{key}_{m}": r[key] for m, r in result["modality_teachers"].items()}
        flat[f"test_{key}_fusion"] = result["fusion"][key]
        flat |= {
            f"test_{key}_fusion_without_{m}": r[key] for m, r in result["fusion_without"].items()
        }
        run.log_metrics(flat)
        write_json(path, result)
        run.log_artifact(path)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold}: {flat}")


if __name__ == "__main__":
    main()
