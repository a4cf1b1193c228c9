"""Train the visual-only student of one method on one fold.

The student sees the face video only. ``train_student.student``: ``finetune`` (default) trains
the video encoder from face crops together with the head, starting for every method from the
fold's video teacher's encoder; ``frozen`` trains the head on that encoder's cached features
(the reference code's student). It runs once per student seed (``--seed``, one of
``run.seeds``; default the first): every method of a fold and seed starts from the same weights
and sees the same batches in the same order (seeded by student seed and fold, not by method),
while the teachers it reads were trained once per fold with ``run.seed``. Methods differ
only in their loss terms and teacher (params ``train_student``): ``visual_only`` (task loss),
``pkd`` (point-to-point cosine to the joint teacher), ``pkdot`` (structural OT to the joint
teacher), ``mtpkdot`` (structural OT + centroid to the teacher the selection strategy picks
from the aligned pool). Teacher outputs come from the pool cache (cross-fitted for training
samples with ``align_teacher_pool.cross_fit``). The epoch kept is the one with the lowest
validation loss averaged over ``smooth_epochs`` epochs, among epochs >= ``min_epochs``.
"""

from __future__ import annotations

import torch

from models.losses import LossInputs, weighted_objective
from models.student import Student
from models.teacher_pool import PoolOutput, select_teacher
from pipeline_steps.fold_data import VIDEO, modality_embeddings, video_shard_paths
from pipeline_steps.frame_batches import FrameBatches
from pipeline_steps.stage import fit_stage, fold_parser, record_result, stage_context
from pipeline_steps.student_model import new_visual_student
from pipeline_steps.tracking import stage_run
from pipeline_steps.trainer import (
    SelectionRule,
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


def selection_rule(cfg: dict) -> SelectionRule:
    """The student's model selection: lowest validation loss (the task loss: CE, or 1 - CCC
    masked) averaged over the last ``smooth_epochs`` epochs, among epochs >= ``min_epochs``."""
    return SelectionRule(
        "val_loss", maximize=False, min_epochs=cfg["min_epochs"], smooth=cfg["smooth_epochs"]
    )


def teacher_shares(wins: dict[str, float], n_batches: int) -> dict[str, float]:
    """Share of training batches each pool teacher taught (a batch split between teachers by
    ``per_sample`` counts by its share of samples)."""
    return (
        {f"teacher_share_{k}": v / n_batches for k, v in sorted(wins.items())} if n_batches else {}
    )


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__, seeded=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    args = parser.parse_args(argv)
    ctx = stage_context(args, salt=STAGE)  # seed + fold, not the method: same init and batches
    cfg = ctx.params[STAGE]
    task = ctx.task
    weights = cfg["weights"].get(args.method)
    if not weights:
        raise SystemExit(f"train_student.weights has no entry for method {args.method!r}")
    strategy = teacher_strategy(args.method, cfg["selection"])
    finetune = cfg["student"] == "finetune"
    splits = ctx.splits()
    y_train, y_val = task.targets(ctx.index, splits.train), task.targets(ctx.index, splits.val)
    pool = cached_pool(ctx.layout.pool_outputs(ctx.fold), splits.train) if strategy else None
    n_fig = min(64, len(splits.val))
    fetch = None
    if finetune:
        model = new_visual_student(ctx.layout, ctx.fold, cfg["hidden"], ctx.n_outputs)
        model = model.to(ctx.device)
        shards = video_shard_paths(ctx.params, ctx.layout)
        fetch = FrameBatches(shards, splits.train, ctx.device)
        val_clips = FrameBatches(shards, splits.val, ctx.device)
        optim = torch.optim.Adam(
            [
                {"params": model.encoder.parameters(), "lr": cfg["lr_encoder"]},
                {"params": model.student.parameters(), "lr": cfg["lr"]},
            ],
            weight_decay=cfg["weight_decay"],
        )
        inputs = [*shards, ctx.layout.teacher(ctx.fold, VIDEO)]

        def forward_val() -> tuple[torch.Tensor, torch.Tensor]:
            outs = [model(c.to(ctx.device)) for c in val_clips.in_order(cfg["batch_size"])]
            return torch.cat([p for p, _ in outs]).cpu(), torch.cat([z for _, z in outs]).cpu()
    else:
        f_train = modality_embeddings(ctx.layout, ctx.fold, [VIDEO], splits.train)[:, 0]
        f_val = modality_embeddings(ctx.layout, ctx.fold, [VIDEO], splits.val)[:, 0]
        dim = f_train.shape[-1]
        model = Student(dim, cfg["hidden"], dim, ctx.n_outputs).to(ctx.device)
        optim = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        inputs = [ctx.layout.embeddings(ctx.fold, VIDEO)]

        def forward_val() -> tuple[torch.Tensor, torch.Tensor]:
            pred, z = model(f_val.to(ctx.device))
            return pred.cpu(), z.cpu()

    counts: dict[str, int] = {}
    # Figure 4: a fixed validation batch's student representations during training.
    half = max(0, cfg["epochs"] // 2 - 1)
    # Kept in the resume state: figure snapshots "start", "half"; batches won per teacher.
    state: dict = {"epochs_done": 0, "wins": {}, "batches": 0}

    with torch.no_grad():
        model.eval()
        state["start"] = forward_val()[1][:n_fig]

    def train_step(idx: torch.Tensor, clips: torch.Tensor | None = None) -> dict[str, float]:
        target = y_train[idx].to(ctx.device)
        if clips is not None:
            pred, z_s = model(clips.to(ctx.device, non_blocking=True))
        else:
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
                state["wins"][name] = state["wins"].get(name, 0.0) + n / len(idx)
            state["batches"] += 1
            z_t = chosen.z.to(ctx.device)
        task_pred, task_target, mask = task.loss_inputs(pred, target)
        loss_inputs = LossInputs(
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
        loss, terms = weighted_objective(weights, loss_inputs)
        return {"loss": optimiser_step(optim, loss), **terms}

    def validate() -> dict[str, float]:
        pred, z = forward_val()
        row = task.validation_row(pred, y_val)
        if state["epochs_done"] <= half:
            state["half"] = z[:n_fig]
        state["epochs_done"] += 1
        total = sum(counts.values())
        row |= {f"chosen_{k}": v / total for k, v in counts.items()} if total else {}
        counts.clear()
        return row

    with stage_run(
        ctx.params, ctx.dataset, ctx.layout, STAGE, method=args.method, fold=ctx.fold, seed=ctx.seed
    ) as run:
        run.log_params({k: v for k, v in cfg.items() if k != "weights"} | {"seed": ctx.seed})
        run.log_params(weights, prefix="weight.")
        run.set_tags({"teacher_strategy": strategy or "none", "student": cfg["student"]})
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
            inputs=[*inputs, *teacher_inputs],
            extra=state,
            selection=selection_rule(cfg),
            fetch=fetch,
        )
        with torch.no_grad():
            final = forward_val()[1][:n_fig]
        teacher_val = None
        if pool is not None:  # the joint teacher's view of the same batch, for comparison
            teacher_val = cached_pool(ctx.layout.pool_outputs(ctx.fold), splits.val[:n_fig]).z[-1]
        write_similarity_snapshots(
            ctx.layout.student_similarity(ctx.fold, args.method, ctx.seed),
            [0.0, (half + 1) / cfg["epochs"], 1.0],
            [state["start"], state.get("half", final), final],
            y_val[:n_fig].figure_labels(),
            teacher=teacher_val,
        )
        student = model.student if finetune else model
        shares = teacher_shares(state["wins"], state["batches"])
        save_checkpoint(
            ctx.layout.student(ctx.fold, args.method, ctx.seed),
            {
                "state_dict": model.cpu().state_dict(),
                "student": cfg["student"],
                "method": args.method,
                "seed": ctx.seed,
                "in_dim": student.head.in_features,
                "hidden": cfg["hidden"],
                "embed_dim": student.head.in_features,
                "n_outputs": ctx.n_outputs,
                "best_epoch": result.best_epoch,
                "teacher_shares": shares,
            },
        )
        run.log_metrics(shares)
        result.best_val |= shares
        summary = record_result(run, ctx, STAGE, args.method, result)
    print(f"[{STAGE}] {ctx.dataset} fold {ctx.fold} seed {ctx.seed} {args.method}: {summary}")


if __name__ == "__main__":
    main()
