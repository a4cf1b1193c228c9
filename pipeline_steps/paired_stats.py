"""Paired comparison of each method with a baseline, the test unit (subject or video) as unit.

Given one score per (method, unit[, seed, fold ...]) row, :func:`paired_table` averages every
method's scores per unit (over seeds and any other rows of that unit), takes the per-unit
difference method - baseline and summarises it per method: mean, a unit-level percentile
bootstrap CI, a two-sided sign-flip permutation p-value (exact up to ``EXACT_MAX_UNITS``
units, Monte Carlo above), the Holm-adjusted p-value over the methods, and wins / ties /
losses. Under the null hypothesis the per-unit differences are symmetric about 0, so flipping
their signs is exchangeable; the units are assumed independent (one test subject each).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd

EXACT_MAX_UNITS = 16  # 2^16 sign patterns: enumerated; more units: Monte Carlo
N_PERMUTATIONS = 20000
N_BOOTSTRAP = 10000
COLUMNS = ["method", "n_units", "mean_diff", "ci_low", "ci_high", "p", "p_holm"]
COLUMNS += ["wins", "ties", "losses"]


def paired_differences(
    scores: pd.DataFrame,
    baseline: str = "visual_only",
    *,
    method: str = "method",
    unit: str = "unit",
    value: str = "score",
) -> pd.DataFrame:
    """Per-unit differences to ``baseline``: rows = units (sorted), columns = other methods.

    Each method's scores are first averaged per unit (over seeds, folds or any other rows).
    Every method must score every unit the baseline scores and no other: a missing pair is a
    ``ValueError`` naming the method and units, never a silently dropped unit.
    """
    missing = {method, unit, value} - set(scores.columns)
    if missing:
        raise ValueError(f"scores lack the column(s) {sorted(missing)}")
    if scores[value].isna().any():
        raise ValueError(f"scores: {int(scores[value].isna().sum())} missing '{value}' value(s)")
    means = scores.groupby([unit, method])[value].mean().unstack(method).sort_index()
    if baseline not in means.columns:
        raise ValueError(f"no scores of the baseline '{baseline}'")
    for name in means.columns:
        gaps = means.index[means[name].isna()].tolist()
        if gaps:
            raise ValueError(f"method '{name}' has no score for unit(s) {gaps}: cannot pair")
    others = [c for c in means.columns if c != baseline]
    return means[others].sub(means[baseline], axis=0)


def sign_flip_p(diffs: np.ndarray, n_permutations: int = N_PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p-value of mean(diffs) = 0 by flipping the signs of the per-unit differences.

    Exact (all 2^n patterns, the observed one included) for n <= ``EXACT_MAX_UNITS``; else
    ``(1 + hits) / (1 + n_permutations)`` with random patterns from ``seed``.
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("sign_flip_p needs a non-empty 1-D array of differences")
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, float(np.abs(d).sum()))  # equal sums must count as "as extreme"
    if len(d) <= EXACT_MAX_UNITS:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        return float(np.mean(np.abs(signs @ d) >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n_permutations, len(d)))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tol))
    return (1 + hits) / (1 + n_permutations)


def bootstrap_ci(
    diffs: np.ndarray, level: float = 0.95, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean difference, resampling units with replacement."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 1 or len(d) == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D array of differences")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    tail = 50.0 * (1.0 - level)
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm step-down adjusted p-values (monotone, capped at 1), same keys."""
    names = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, adjusted = len(names), 0.0, {}
    for rank, name in enumerate(names):
        running = max(running, min(1.0, (m - rank) * pvalues[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in pvalues}


@dataclass(frozen=True)
class Record:
    """Wins, ties and losses of a method against the baseline over units."""

    wins: int
    ties: int
    losses: int


def wins_ties_losses(diffs: np.ndarray, tie: float = 0.0) -> Record:
    """Units where the method is better (diff > tie), within ``tie``, or worse."""
    d = np.asarray(diffs, dtype=np.float64)
    return Record(int(np.sum(d > tie)), int(np.sum(np.abs(d) <= tie)), int(np.sum(d < -tie)))


def paired_table(
    scores: pd.DataFrame,
    baseline: str = "visual_only",
    *,
    method: str = "method",
    unit: str = "unit",
    value: str = "score",
    level: float = 0.95,
    tie: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per method (not the baseline): n_units, mean_diff, ci_low, ci_high, p, p_holm,
    wins, ties, losses (higher score = better)."""
    diffs = paired_differences(scores, baseline, method=method, unit=unit, value=value)
    rows = []
    for name in diffs.columns:
        d = diffs[name].to_numpy()
        low, high = bootstrap_ci(d, level=level, seed=seed)
        record = wins_ties_losses(d, tie)
        rows.append(
            {
                "method": name,
                "n_units": len(d),
                "mean_diff": float(d.mean()),
                "ci_low": low,
                "ci_high": high,
                "p": sign_flip_p(d, seed=seed),
                "wins": record.wins,
                "ties": record.ties,
                "losses": record.losses,
            }
        )
    adjusted = holm({row["method"]: row["p"] for row in rows})
    for row in rows:
        row["p_holm"] = adjusted[row["method"]]
    return pd.DataFrame(rows, columns=COLUMNS)
