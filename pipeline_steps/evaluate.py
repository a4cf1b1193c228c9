"""Evaluate one trained student on its fold's test subjects (the only reader of the test split).

Every test sample is predicted (no drop_last), one batch at a time in eval mode; the
student (fold, method, ``--seed``: one of ``run.seeds``, default the first) needs face frames
only. Writes the metrics JSON and a per-sample predictions CSV.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from pipeline_steps.atomic import atomic_path, write_json
from pipeline_steps.fold_data import VIDEO, modality_array
from pipeline_steps.folds import split_ids
from pipeline_steps.stage import fold_parser, stage_context
from pipeline_steps.student_model import load_visual_student
from pipeline_steps.tasks import DIMENSIONS, UNIT, Targets, Task
from pipeline_steps.tracking import stage_run
from pipeline_steps.train_student import METHODS
from pipeline_steps.trainer import eval_batches, load_checkpoint

if TYPE_CHECKING:
    import pandas as pd

STAGE = "evaluate"


def prediction_table(
    task: Task, ids: list[str], pred: torch.Tensor, y: Targets, units: list[str]
) -> pd.DataFrame:
    """Per-sample predictions: class probabilities, or the window's valence and arousal; with
    each sample's test unit (``subject`` for classification, ``video`` for regression)."""
    import pandas as pd

    table = pd.DataFrame({"sample_id": ids, UNIT[task.name]: units})
    if task.is_classification:
        probs = torch.softmax(pred, 1).numpy()
        table["label"] = y.y.numpy()
        table["pred"] = probs.argmax(1)
        for c, name in enumerate(task.classes):
            table[f"p_{name}"] = probs[:, c].astype(np.float32)
        return table
    for d, name in enumerate(DIMENSIONS):
        table[f"pred_{name}"] = pred[:, d].numpy()
    return table


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__, seeded=True)
    parser.add_argument("--method", required=True, choices=METHODS)
    args = parser.parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    test_ids = split_ids(ctx.index, ctx.fold, "test")
    frames = modality_array(ctx.params, ctx.layout, VIDEO, test_ids)
    task = ctx.task
    y_test = task.targets(ctx.index, test_ids)
    seed = ctx.seed
    model = load_visual_student(ctx.layout, ctx.fold, args.method, seed).to(ctx.device)
    shares = load_checkpoint(ctx.layout.student(ctx.fold, args.method, seed))
    shares = shares.get("teacher_shares", {})
    batch_size = ctx.params[STAGE]["batch_size"]
    with torch.no_grad():
        pred = torch.cat(
            [
                model(torch.from_numpy(frames[sl]).to(ctx.device))[0].cpu()
                for sl in eval_batches(len(test_ids), batch_size)
            ]
        )
    if len(pred) != len(test_ids):
        raise AssertionError("evaluation lost samples")
    metrics = task.metrics(pred, y_test)
    out = ctx.layout.evaluation(ctx.fold, args.method, seed)
    predictions = ctx.layout.predictions(ctx.fold, args.method, seed)
    units = ctx.index.set_index("sample_id").loc[test_ids, UNIT[task.name]].astype(str)
    preds = prediction_table(task, test_ids, pred, y_test, units.tolist())
    with stage_run(
        ctx.params, ctx.dataset, ctx.layout, STAGE, method=args.method, fold=ctx.fold, seed=seed
    ) as run:
        run.log_params({"seed": seed})
        run.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, float)})
        with atomic_path(predictions) as tmp:
            preds.to_csv(tmp, index=False)
        # teacher_share_<name>: share of training batches each pool teacher taught
        result = {"method": args.method, "fold": ctx.fold, "seed": seed, **metrics, **shares}
        write_json(out, result)
        run.log_artifact(out)
        run.log_artifact(predictions)
    scores = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
    print(
        f"[{STAGE}] {ctx.dataset} fold {ctx.fold} seed {seed} {args.method}: {scores} "
        f"(n={metrics['n']})"
    )


if __name__ == "__main__":
    main()
