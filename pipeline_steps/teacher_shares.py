"""The report's table of how often each pool teacher taught each method's student.

``evaluate`` copies a student's ``teacher_share_<teacher>`` (share of its training batches that
teacher won; ``train_student``) into the evaluation JSON; this sums them up over folds.
"""

from __future__ import annotations

import json

import pandas as pd

from pipeline_steps.layout import Layout

PREFIX = "teacher_share_"


def teacher_share_table(layout: Layout, methods: list[str], n_folds: int) -> pd.DataFrame:
    """Mean share over folds, one row per method with a teacher, one column per teacher."""
    rows = []
    for method in methods:
        for fold in range(n_folds):
            path = layout.evaluation(fold, method)
            result = json.loads(path.read_text()) if path.exists() else {}
            shares = {k.removeprefix(PREFIX): v for k, v in result.items() if k.startswith(PREFIX)}
            if shares:
                rows.append({"method": method, "fold": fold, **shares})
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).fillna(0.0)
    return frame.drop(columns="fold").groupby("method", sort=False).mean()


def teacher_share_markdown(layout: Layout, methods: list[str], n_folds: int) -> str:
    """Markdown lines for the report ('' when no method distils from the pool)."""
    table = teacher_share_table(layout, methods, n_folds)
    if table.empty:
        return ""
    lines = [
        "",
        "Share of training batches each pool teacher taught (mean over folds):",
        "",
        "| method | " + " | ".join(table.columns) + " |",
        "|---" * (len(table.columns) + 1) + "|",
    ]
    for method, row in table.iterrows():
        lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines) + "\n"
