"""Train the visual-only student of one method on one fold.

The student reads the frozen video-teacher features of each clip (the face video is its only
input). Methods differ only in their loss terms and teacher (params ``train_student``):
``visual_only`` (task loss), ``pkd`` (point-to-point cosine to the joint teacher), ``pkdot``
(structural OT to the joint teacher), ``mtpkdot`` (structural OT + centroid to the teacher the
selection strategy picks from the aligned pool). Teacher outputs come from the pool cache.
"""

from __future__ import annotations

import torch

from models.losses import LossInputs, weighted_objective
from models.student import Student
from models.teacher_pool import PoolOutput, select_teacher
from pipeline_steps.fold_data import VIDEO, modality_embeddings
from pipeline_steps.stage import fit_stage, fold_parser, record_result, stage_context
from pipeline_steps.tracking import stage_run
from pipeline_steps.trainer import (
    load_checkpoint,
    optimiser_step,
    save_checkpoint,
    write_similarity_snapshots,
)

STAGE = "train_student"
METHODS = ("visual_only", "pkd", "pkdot", "mtpkdot")


def teacher_strategy(method: str, selection: str) -> str | None:
    """Which pool teacher a method distils from (None: no teacher)."""
    return {"visual_only": None, "pkd": "joint_only", "pkdot": "joint_only"}.get(method, selection)


def cached_pool(path, ids: list[str]) -> PoolOutput:  # noqa: ANN001
    """Pool outputs (P, N, ...) of ``ids`` from the per-fold cache."""
    cache = load_checkpoint(path)
    pos = {s: i for i, s in enumerate(cache["sample_ids"])}
    rows = torch.as_tensor([pos[s] for s in ids])
    return PoolOutput(
        names=list(cache["names"]), z=cache["z"][:, rows], pred=cache["pred"][:, rows]
    )


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__)
    parser.add_argument("--method", required=True, choices=METHODS)
    args = parser.parse_args(argv)
    ctx = stage_context(args, salt=f"{STAGE}-{args.method}")
    cfg = ctx.params[STAGE]
    task = ctx.task
    weights = cfg["weights"].get(args.method)
    if not weights:
        raise SystemExit(f"train_student.weights has no entry for method {args.method!r}")
    strategy = teacher_strategy(args.method, cfg["selection"])
    splits = ctx.splits()
    f_train = modality_embeddings(ctx.layout, ctx.fold, [VIDEO], splits.train)[:, 0]
    f_val = modality_embeddings(ctx.layout, ctx.fold, [VIDEO], splits.val)[:, 0]
    y_train, y_val = task.targets(ctx.index, splits.train), task.targets(ctx.index, splits.val)
    pool = cached_pool(ctx.layout.pool_outputs(ctx.fold), splits.train) if strategy else None
    embed_dim = f_train.shape[-1]
    model = Student(embed_dim, cfg["hidden"], embed_dim, ctx.n_outputs).to(ctx.device)
    optim = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    counts: dict[str, int] = {}
    # Figure 4: a fixed validation batch's student representations during training.
    n_fig = min(64, len(f_val))
    half = max(0, cfg["epochs"] // 2 - 1)
    figure: dict = {"epochs_done": 0}  # snapshots "start", "half"; kept in the resume state

    def snapshot() -> torch.Tensor:
        return model(f_val[:n_fig].to(ctx.device))[1].detach().cpu()

    with torch.no_grad():
        figure["start"] = snapshot()

    def train_step(idx: torch.Tensor) -> dict[str, float]:
        target = y_train[idx].to(ctx.device)
        pred, z_s = model(f_train[idx].to(ctx.device))
        z_t = None
        if pool is not None:
            batch = PoolOutput(pool.names, pool.z[:, idx], pool.pred[:, idx])
            chosen = select_teacher(
                strategy,
                batch,
                target.to("cpu"),
                task.name,
                per_sample_loss_fn=task.per_sample_loss,
                batch_loss_fn=task.loss,
            )
            for name, n in chosen.counts.items():
                counts[name] = counts.get(name, 0) + n
            z_t = chosen.z.to(ctx.device)
        task_pred, task_target, mask = task.loss_inputs(pred, target)
        inputs = LossInputs(
            pred=task_pred,
            target=task_target,
            task=task.name,
            mask=mask,
            z_student=z_s,
            z_teacher=z_t,
            topk=cfg["topk"],
            topk_largest=cfg["topk_largest"],
            blur=cfg["blur"],
            sinkhorn_iters=cfg["sinkhorn_iters"],
        )
        loss, terms = weighted_objective(weights, inputs)
        return {"loss": optimiser_step(optim, loss), **terms}

    def validate() -> dict[str, float]:
        pred, _ = model(f_val.to(ctx.device))
        row = task.validation_row(pred, y_val)
        if figure["epochs_done"] <= half:
            figure["half"] = snapshot()
        figure["epochs_done"] += 1
        total = sum(counts.values())
        row |= {f"chosen_{k}": v / total for k, v in counts.items()} if total else {}
        counts.clear()
        return row

    with stage_run(
        ctx.params, ctx.dataset, ctx.layout, STAGE, method=args.method, fold=ctx.fold
    ) as run:
        run.log_params({k: v for k, v in cfg.items() if k != "weights"})
        run.log_params(weights, prefix="weight.")
        run.set_tags({"teacher_strategy": strategy or "none"})
        teacher_inputs = [ctx.layout.pool_outputs(ctx.fold)] if pool is not None else []
        result = fit_stage(
            ctx,
            cfg,
            model,
            len(splits.train),
            train_step,
            validate,
            run,
            stage=STAGE,
            name=args.method,
            optimizer=optim,
            inputs=[ctx.layout.embeddings(ctx.fold, VIDEO), *teacher_inputs],
            extra=figure,
        )
        with torch.no_grad():
            final = snapshot()
        teacher_val = None
        if pool is not None:  # the joint teacher's view of the same batch, for comparison
            teacher_val = cached_pool(ctx.layout.pool_outputs(ctx.fold), splits.val[:n_fig]).z[-1]
        write_similarity_snapshots(
            ctx.layout.student_similarity(ctx.fold, args.method),
            [0.0, (half + 1) / cfg["epochs"], 1.0],
            [figure["start"], figure.get("half", final), final],
            y_val[:n_fig].figure_labels(),
            teacher=teacher_val,
        )
        save_checkpoint(
            ctx.layout.student(ctx.fold, args.method),
            {
                "state_dict": model.cpu().state_dict(),
                "method": args.method,
                "in_dim": embed_dim,
                "hidden": cfg["hidden"],
                "embed_dim": embed_dim,
                "n_outputs": ctx.n_outputs,
                "best_epoch": result.best_epoch,
            },
        )
        summary = record_result(run, ctx, STAGE, args.method, result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold} {args.method}: {summary}")


if __name__ == "__main__":
    main()
