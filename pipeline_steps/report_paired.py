"""The report's paired comparison of every method with ``visual_only``, per test unit.

Units and their scores come from :mod:`pipeline_steps.unit_scores` (test subject, or test video
for Aff-Wild2), the statistics from :func:`pipeline_steps.paired_stats.paired_table`: each
method's per-unit score is averaged over seeds (and over folds when a unit is tested in
several), the per-unit difference to the baseline is summarised by its mean, a unit-level
percentile bootstrap CI (``report.ci_level``), a two-sided sign-flip permutation p-value, its
Holm adjustment over the methods, and wins / ties / losses.

Writes ``paired.csv`` (the table) and ``paired_units.csv`` (every unit's difference), adds a
section to report.md / report.html, a figure, and the parent MLflow run's ``paired_*`` metrics.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline_steps.atomic import atomic_path
from pipeline_steps.layout import Layout
from pipeline_steps.paired_stats import COLUMNS, EXACT_MAX_UNITS, paired_differences, paired_table
from pipeline_steps.unit_scores import UnitScores

BASELINE = "visual_only"
SCORE = {"subject": "accuracy", "video": "CCC mean (valence, arousal)"}
METRIC_KEYS = {
    "mean_diff": "paired_diff",
    "ci_low": "paired_ci_low",
    "ci_high": "paired_ci_high",
    "p": "paired_p",
    "p_holm": "paired_p_holm",
}


@dataclass
class PairedSection:
    """The paired table, the per-unit differences (rows = units, columns = methods) and what
    the reader needs to know (unit, seeds, level, skipped units)."""

    table: pd.DataFrame
    diffs: pd.DataFrame
    unit: str
    n_seeds: int
    level: float
    skipped: list[str]


def build(units: UnitScores, n_seeds: int, level: float) -> PairedSection | None:
    """The paired section, or None when there is no baseline or no other method to pair."""
    methods = set(units.scores["method"])
    if BASELINE not in methods or len(methods) < 2:
        return None
    table = paired_table(units.scores, BASELINE, level=level)
    diffs = paired_differences(units.scores, BASELINE)
    return PairedSection(table, diffs, units.unit, n_seeds, level, units.skipped)


def reading_rule(section: PairedSection) -> str:
    """One plain paragraph: what a row says, the units, n, the CI and the p-values."""
    n = int(section.table["n_units"].iloc[0])
    pct = int(round(section.level * 100))
    seeds = f"averaged over {section.n_seeds} student seeds" if section.n_seeds > 1 else "one seed"
    exact = "exact over all 2^n sign patterns" if n <= EXACT_MAX_UNITS else "Monte Carlo"
    text = (
        f"Unit = test {section.unit} (n = {n}). For each {section.unit}, the method's "
        f"{SCORE[section.unit]} on that {section.unit}'s test samples minus {BASELINE}'s "
        f"({seeds}, and over folds where a {section.unit} is tested in several); mean_diff > 0 "
        f"means the method does better. [ci_low, ci_high]: {pct}% percentile bootstrap interval "
        f"of the mean difference, resampling {section.unit}s; an interval above 0 says the gain "
        f"is unlikely to come from which {section.unit}s happened to be tested (with few "
        f"{section.unit}s, under about 20, this interval is too narrow: rely on p). p: two-sided "
        f"sign-flip permutation test of a zero mean difference ({exact}); p_holm: p adjusted "
        f"over the {len(section.table)} methods (Holm), the one to compare with "
        f"{1 - section.level:.2g}. wins / ties / losses: {section.unit}s where the method "
        f"scores higher / the same / lower."
    )
    if n <= EXACT_MAX_UNITS:
        text += f" With n = {n} the smallest p possible is {2 / 2**n:.2g}."
    if section.skipped:
        text += f" Left out (no score): {'; '.join(section.skipped)}."
    return text


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in ("mean_diff", "ci_low", "ci_high"):
        out[col] = out[col].map(lambda v: f"{v:+.3f}")
    for col in ("p", "p_holm"):
        out[col] = out[col].map(lambda v: f"{v:.3g}")
    return out.astype(str)


def to_markdown(section: PairedSection | None) -> str:
    if section is None:
        return ""
    frame = _formatted(section.table)
    lines = [
        "",
        f"## Paired comparison with {BASELINE}, per test {section.unit}",
        "",
        "| " + " | ".join(frame.columns) + " |",
        "|---" * len(frame.columns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([*lines, "", reading_rule(section)]) + "\n"


def to_html(section: PairedSection | None) -> str:
    if section is None:
        return ""
    return (
        f"<h2>Paired comparison with {BASELINE}, per test {html.escape(section.unit)}</h2>"
        + _formatted(section.table).to_html(index=False, escape=True, border=0)
        + f'<p class="note">{html.escape(reading_rule(section))}</p>'
    )


def units_frame(section: PairedSection) -> pd.DataFrame:
    """Long form of the per-unit differences: unit, method, diff."""
    long = section.diffs.rename_axis("unit").reset_index()
    return long.melt(id_vars="unit", var_name="method", value_name="diff")


def figure(section: PairedSection, plt):  # noqa: ANN001, ANN201
    """One point per unit and method (method - baseline), the mean as a bar, the zero line."""
    diffs = section.diffs
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(diffs.columns) + 1.5), 3.4))
    rng = np.random.default_rng(0)  # horizontal jitter only, so overlapping points show
    for i, method in enumerate(diffs.columns):
        values = diffs[method].to_numpy()
        ax.bar(i, values.mean(), width=0.6, color=f"C{i}", alpha=0.3)
        ax.scatter(i + rng.uniform(-0.2, 0.2, len(values)), values, s=14, color=f"C{i}")
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(diffs.columns)), list(diffs.columns))
    ax.set_ylabel(f"{SCORE[section.unit]}: method - {BASELINE}")
    ax.set_title(f"Paired differences per test {section.unit} (bar = mean)", fontsize=10)
    fig.tight_layout()
    return fig


def mlflow_metrics(section: PairedSection | None) -> dict[str, float]:
    """``paired_diff_<method>``, ``paired_ci_low_…``, ``paired_ci_high_…``, ``paired_p_…``,
    ``paired_p_holm_…`` (finite values only)."""
    if section is None:
        return {}
    out = {}
    for row in section.table.to_dict("records"):
        for col, key in METRIC_KEYS.items():
            if math.isfinite(row[col]):
                out[f"{key}_{row['method']}"] = float(row[col])
    return out


def write_csvs(layout: Layout, section: PairedSection | None) -> None:
    """``paired.csv`` and ``paired_units.csv`` (headers only when there is nothing to pair)."""
    table = section.table if section is not None else pd.DataFrame(columns=COLUMNS)
    units = (
        units_frame(section)
        if section is not None
        else pd.DataFrame(columns=["unit", "method", "diff"])
    )
    for path, frame in ((layout.paired_csv, table), (layout.paired_units_csv, units)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
