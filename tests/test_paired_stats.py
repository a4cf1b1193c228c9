"""Reference tests of the paired statistics (per-unit differences to a baseline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline_steps import paired_stats as ps


def _scores() -> pd.DataFrame:
    """Three units, two seeds each; mtpkdot = baseline + 0.1 on average per unit."""
    rows = []
    base = {"s1": 0.6, "s2": 0.7, "s3": 0.5}
    for unit, b in base.items():
        for seed, jitter in ((0, -0.02), (1, 0.02)):
            rows.append({"method": "visual_only", "unit": unit, "seed": seed, "score": b + jitter})
            rows.append({"method": "mtpkdot", "unit": unit, "seed": seed, "score": b + 0.1})
            rows.append({"method": "pkd", "unit": unit, "seed": seed, "score": b - 0.05 * seed})
    return pd.DataFrame(rows)


def test_differences_average_seeds_within_unit() -> None:
    diffs = ps.paired_differences(_scores())
    assert list(diffs.index) == ["s1", "s2", "s3"]
    assert sorted(diffs.columns) == ["mtpkdot", "pkd"]
    assert np.allclose(diffs["mtpkdot"], 0.1)
    assert np.allclose(diffs["pkd"], -0.025)


def test_unpaired_unit_is_an_error_naming_it() -> None:
    scores = _scores()
    scores = scores[~((scores.method == "pkd") & (scores.unit == "s2"))]
    with pytest.raises(ValueError, match=r"'pkd' has no score for unit\(s\) \['s2'\]"):
        ps.paired_differences(scores)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        ps.paired_differences(_scores(), "nope")
    with pytest.raises(ValueError, match="lack the column"):
        ps.paired_differences(_scores().drop(columns="unit"))


@pytest.mark.parametrize(
    "diffs",
    [
        [0.1, 0.2, -0.05, 0.3, 0.15],
        [0.02, -0.01, 0.03, 0.0, -0.04, 0.05, 0.01],
        [1.0, 1.0, -1.0, 1.0],  # ties in |d|: equal sums must count as extreme
        [-0.3, -0.1, -0.2],
    ],
)
def test_sign_flip_exact_matches_scipy(diffs: list[float]) -> None:
    ref = stats.permutation_test(
        (np.array(diffs),), np.mean, permutation_type="samples", n_resamples=np.inf
    ).pvalue
    assert ps.sign_flip_p(np.array(diffs)) == pytest.approx(ref)


def test_sign_flip_by_hand_and_monte_carlo() -> None:
    # 5 positive differences: only all-plus and all-minus are as extreme: 2 / 32
    assert ps.sign_flip_p(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == pytest.approx(2 / 32)
    assert ps.sign_flip_p(np.zeros(4)) == 1.0
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 20)  # above EXACT_MAX_UNITS: Monte Carlo
    exact = np.mean(
        [
            abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12
            for s in rng.choice((1.0, -1.0), size=(200000, 20))
        ]
    )
    p = ps.sign_flip_p(d, seed=3)
    assert p == pytest.approx(exact, abs=0.01)
    assert p == ps.sign_flip_p(d, seed=3)


def test_bootstrap_ci() -> None:
    assert ps.bootstrap_ci(np.full(6, 0.2)) == pytest.approx((0.2, 0.2))
    d = np.array([0.05, 0.1, -0.02, 0.2, 0.08, 0.12, 0.0, 0.07])
    low, high = ps.bootstrap_ci(d, seed=0)
    assert low < d.mean() < high
    assert (low, high) == ps.bootstrap_ci(d, seed=0)
    # close to the normal approximation for the mean of n units
    half = 1.96 * d.std(ddof=0) / np.sqrt(len(d))
    assert high - low == pytest.approx(2 * half, rel=0.2)
    narrow = ps.bootstrap_ci(d, level=0.5, seed=0)
    assert low < narrow[0] < narrow[1] < high
    with pytest.raises(ValueError, match="level"):
        ps.bootstrap_ci(d, level=1.0)


def test_holm_by_hand() -> None:
    adjusted = ps.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    # sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    assert adjusted == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert ps.holm({"a": 0.6, "b": 0.7}) == pytest.approx({"a": 1.0, "b": 1.0})
    assert ps.holm({}) == {}


def test_wins_ties_losses() -> None:
    record = ps.wins_ties_losses(np.array([0.1, 0.0, -0.2, 0.01, 0.3]), tie=0.02)
    assert (record.wins, record.ties, record.losses) == (2, 2, 1)


def test_paired_table() -> None:
    table = ps.paired_table(_scores()).set_index("method")
    assert list(table.columns) == ps.COLUMNS[1:]
    row = table.loc["mtpkdot"]
    assert row.n_units == 3 and row.mean_diff == pytest.approx(0.1)
    assert (row.wins, row.ties, row.losses) == (3, 0, 0)
    assert row.p == pytest.approx(2 / 8)  # 3 units: exact sign-flip
    assert row.p_holm == pytest.approx(min(1.0, 2 * min(table.p)))
    assert table.loc["pkd"].losses == 3 and table.loc["pkd"].ci_high < 0
    only_baseline = _scores()[lambda t: t.method == "visual_only"]
    assert ps.paired_table(only_baseline).empty
