"""Evaluate one trained student on its fold's test subjects (the only reader of the test split).

Every test sample is predicted (no drop_last), one batch at a time in eval mode; the
student needs face frames only. Writes the metrics JSON and a per-sample predictions CSV.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from pipeline_steps.atomic import atomic_path, write_json
from pipeline_steps.fold_data import VIDEO, labels, modality_array
from pipeline_steps.folds import split_ids
from pipeline_steps.metrics import classification_metrics
from pipeline_steps.stage import fold_parser, stage_context
from pipeline_steps.student_model import load_visual_student
from pipeline_steps.tracking import stage_run
from pipeline_steps.train_student import METHODS
from pipeline_steps.trainer import eval_batches

STAGE = "evaluate"


def main(argv: list[str] | None = None) -> None:
    parser = fold_parser(__doc__)
    parser.add_argument("--method", required=True, choices=METHODS)
    args = parser.parse_args(argv)
    ctx = stage_context(args, salt=STAGE)
    test_ids = split_ids(ctx.index, ctx.fold, "test")
    frames = modality_array(ctx.params, ctx.layout, VIDEO, test_ids)
    y_test = labels(ctx.index, test_ids).numpy()
    model = load_visual_student(ctx.layout, ctx.fold, args.method).to(ctx.device)
    batch_size = ctx.params[STAGE]["batch_size"]
    with torch.no_grad():
        probs = torch.cat(
            [
                torch.softmax(model(torch.from_numpy(frames[sl]).to(ctx.device))[0], 1).cpu()
                for sl in eval_batches(len(test_ids), batch_size)
            ]
        ).numpy()
    if len(probs) != len(test_ids):
        raise AssertionError("evaluation lost samples")
    y_pred = probs.argmax(1)
    metrics = classification_metrics(y_test, y_pred, ctx.n_outputs)
    out = ctx.layout.evaluation(ctx.fold, args.method)
    preds = pd.DataFrame({"sample_id": test_ids, "label": y_test, "pred": y_pred})
    for c, name in enumerate(ctx.ds["classes"]):
        preds[f"p_{name}"] = probs[:, c].astype(np.float32)
    with stage_run(
        ctx.params, ctx.dataset, ctx.layout, STAGE, method=args.method, fold=ctx.fold
    ) as run:
        run.log_metrics({f"test_{k}": metrics[k] for k in ("accuracy", "macro_f1")})
        with atomic_path(out.with_suffix(".predictions.csv")) as tmp:
            preds.to_csv(tmp, index=False)
        write_json(out, {"method": args.method, "fold": ctx.fold, **metrics})
        run.log_artifact(out)
        run.log_artifact(out.with_suffix(".predictions.csv"))
    print(
        f"[{STAGE}] {ctx.dataset} fold {ctx.fold} {args.method}: "
        f"accuracy {metrics['accuracy']:.3f} macro-F1 {metrics['macro_f1']:.3f} (n={metrics['n']})"
    )


if __name__ == "__main__":
    main()
