"""The report's table of how often each pool teacher taught each method's student.

``evaluate`` copies a student's ``teacher_share_<teacher>`` (share of its training batches that
teacher won; ``train_student``) into the evaluation JSON; this averages them over folds and
student seeds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from pipeline_steps.layout import Layout

PREFIX = "teacher_share_"


def teacher_share_table(
    layout: Layout, methods: list[str], n_folds: int, seeds: Sequence[int] = (0,)
) -> pd.DataFrame:
    """Mean share over folds and seeds, one row per method with a teacher, one column per
    teacher."""
    rows = []
    for method in methods:
        for fold in range(n_folds):
            for seed in seeds:
                path = layout.evaluation(fold, method, seed)
                result = json.loads(path.read_text()) if path.exists() else {}
                shares = {
                    k.removeprefix(PREFIX): v for k, v in result.items() if k.startswith(PREFIX)
                }
                if shares:
                    rows.append({"method": method, **shares})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).fillna(0.0).groupby("method", sort=False).mean()


def teacher_share_markdown(
    layout: Layout, methods: list[str], n_folds: int, seeds: Sequence[int] = (0,)
) -> str:
    """Markdown lines for the report ('' when no method distils from the pool)."""
    table = teacher_share_table(layout, methods, n_folds, seeds)
    if table.empty:
        return ""
    lines = [
        "",
        "Share of training batches each pool teacher taught (mean over folds and seeds):",
        "",
        "| method | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for method, row in table.iterrows():
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"
