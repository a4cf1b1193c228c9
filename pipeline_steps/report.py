"""Results table: one row per method, mean, std and confidence interval over folds.

Writes ``results/<dataset>/report.csv`` and ``report.md`` and logs both, with the per-method
means, to the pipeline's MLflow parent run.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from scipy import stats

from pipeline_steps.atomic import atomic_path, write_text
from pipeline_steps.config import dataset_params, load_params, step_parser
from pipeline_steps.layout import Layout, layout_for
from pipeline_steps.tracking import StageRun, client, parent_run_id

METRICS = ("accuracy", "macro_f1")


def summarise(values: list[float], level: float) -> dict[str, float]:
    """Mean, sample std and the t-interval of the mean (std 0 and interval = mean for n=1)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    half = (
        float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * std / np.sqrt(len(x)))
        if len(x) > 1
        else 0.0
    )
    return {"mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def collect(layout: Layout, methods: list[str], n_folds: int) -> pd.DataFrame:
    """Per-fold test metrics of every method (all folds must be present)."""
    rows = []
    for method in methods:
        for fold in range(n_folds):
            path = layout.evaluation(fold, method)
            if not path.exists():
                raise FileNotFoundError(f"{path}: evaluation missing; run evaluate first")
            result = json.loads(path.read_text())
            rows.append({"method": method, "fold": fold, **{m: result[m] for m in METRICS}})
    return pd.DataFrame(rows)


def build_table(per_fold: pd.DataFrame, dataset: str, level: float) -> pd.DataFrame:
    rows = []
    for method, group in per_fold.groupby("method", sort=False):
        row = {"dataset": dataset, "method": method, "n_folds": len(group)}
        for metric in METRICS:
            for key, value in summarise(group[metric].tolist(), level).items():
                row[f"{metric}_{key}"] = round(value, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, level: float) -> str:
    pct = int(round(level * 100))
    lines = [
        f"| dataset | method | folds | accuracy mean ± std [{pct}% CI] "
        f"| macro-F1 mean ± std [{pct}% CI] |",
        "|---|---|---|---|---|",
    ]
    for r in table.to_dict("records"):
        cells = [
            f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f} "
            f"[{r[f'{m}_ci_low']:.3f}, {r[f'{m}_ci_high']:.3f}]"
            for m in METRICS
        ]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['n_folds']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    dataset_params(params, args.dataset)
    layout = layout_for(params, args.dataset)
    level = params["report"]["ci_level"]
    per_fold = collect(
        layout, params["train_student"]["methods"], params["index_dataset"]["n_folds"]
    )
    table = build_table(per_fold, args.dataset, level)
    markdown = to_markdown(table, level)
    with atomic_path(layout.report_csv) as tmp:
        table.to_csv(tmp, index=False)
    write_text(layout.report_md, markdown)
    run = StageRun(client(), parent_run_id(params, args.dataset, layout))
    run.log_metrics(
        {
            f"{r['method']}.{m}_mean": r[f"{m}_mean"]
            for r in table.to_dict("records")
            for m in METRICS
        }
    )
    run.log_artifact(layout.report_csv)
    run.log_artifact(layout.report_md)
    print(markdown)
    print(f"[report] table: {layout.report_csv} and {layout.report_md}")


if __name__ == "__main__":
    main()
