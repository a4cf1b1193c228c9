"""The report step: table with clipped intervals, figures from optional artifacts, HTML page,
`snakemake --report`, and the progress helper."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline_steps import report
from pipeline_steps.layout import Layout
from pipeline_steps.progress import progress
from pipeline_steps.trainer import (
    write_history,
    write_similarity_snapshots,
    write_teacher_embeddings,
)

METHODS = ["visual_only", "mtpkdot"]
N_FOLDS = 3


def fake_results(root: Path, artifacts: bool) -> Layout:
    layout = Layout(root / "results", "biovid")
    rng = np.random.default_rng(0)
    for fold in range(N_FOLDS):
        for method in METHODS:
            acc = 0.99 if method == "mtpkdot" else float(rng.uniform(0.4, 0.7))
            path = layout.evaluation(fold, method, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"accuracy": acc, "macro_f1": acc - 0.01, "n": 10}))
            if artifacts:
                write_history(
                    layout.history(fold, "train_student", method, 0),
                    [
                        {"train_loss": 1 / (e + 1), "val_loss": 1.0, "val_accuracy": 0.5}
                        for e in range(5)
                    ],
                )
    if artifacts:
        labels = torch.tensor([0, 1] * 6)
        z = [torch.randn(12, 8) for _ in range(3)]
        write_similarity_snapshots(
            layout.student_similarity(0, "mtpkdot", 0), [0.0, 0.5, 1.0], z, labels, z[-1]
        )
        write_teacher_embeddings(
            layout.pool_embeddings(0),
            ["video", "eda", "joint"],
            torch.randn(3, 12, 8),
            torch.randn(3, 12, 8),
            labels,
        )
    return layout


def test_interval_is_clipped_to_the_metric_range(tmp_path):
    layout = fake_results(tmp_path, artifacts=False)
    per_fold = report.collect(layout, METHODS, N_FOLDS)
    per_fold.loc[(per_fold.method == "mtpkdot") & (per_fold.fold == 0), "accuracy"] = 0.7
    table = report.build_table(per_fold, "biovid", 0.95).set_index("method")
    assert table.loc["mtpkdot", "accuracy_ci_high"] == 1.0
    assert (table["accuracy_ci_low"] >= 0).all() and (table["accuracy_ci_high"] <= 1).all()
    raw = report.summarise(per_fold[per_fold.method == "mtpkdot"]["accuracy"].tolist(), 0.95)
    assert raw["ci_high"] > 1  # what was clipped
    md = report.to_markdown(table.reset_index(), 0.95, per_fold)
    assert "clipped to the metric range [0, 1]" in md and "| mtpkdot | 0.700 |" in md


@pytest.mark.parametrize("artifacts", [True, False])
def test_html_report_with_and_without_training_artifacts(tmp_path, artifacts):
    layout = fake_results(tmp_path, artifacts)
    per_fold = report.collect(layout, METHODS, N_FOLDS)
    table = report.build_table(per_fold, "biovid", 0.95)
    figs = tmp_path / "figures"
    figs.mkdir()
    figures = report.make_figures(layout, per_fold, METHODS, N_FOLDS, figs)
    page = report.to_html("biovid", table, per_fold, 0.95, figures)
    written = sorted(p.name for p in figs.glob("*.png"))
    if artifacts:
        assert written == ["curves.png", "embeddings.png", "per_fold.png", "similarity.png"]
        assert page.count("data:image/png;base64,") == 4 and "Not available" not in page
    else:  # no history CSV, no MLflow parent run, no npz: notes instead of figures
        assert written == ["per_fold.png"]
        assert page.count('class="missing"') == 3
    assert "<th>method</th>" in page and "mtpkdot" in page and "fold 2" in page


def test_pca_2d_keeps_the_main_direction():
    rng = np.random.default_rng(0)
    x = np.outer(rng.normal(size=50), [3.0, 0, 0, 0]) + 0.01 * rng.normal(size=(50, 4))
    xy = report.pca_2d(x)
    assert xy.shape == (50, 2) and abs(np.corrcoef(xy[:, 0], x[:, 0])[0, 1]) > 0.99


def test_history_csv_round_trip(tmp_path):
    path = tmp_path / "h.csv"
    write_history(path, [{"train_loss": 1.0}, {"train_loss": 0.5, "val_accuracy": 0.6}])
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["epoch", "train_loss", "val_accuracy"]
    assert frame["epoch"].tolist() == [0, 1] and np.isnan(frame["val_accuracy"][0])


def test_progress_is_quiet_off_a_terminal_and_draws_when_forced(monkeypatch):
    monkeypatch.delenv("MTPKDOT_PROGRESS", raising=False)
    quiet = io.StringIO()
    assert list(progress(range(5), desc="x", stream=quiet)) == list(range(5))
    assert quiet.getvalue() == ""
    monkeypatch.setenv("MTPKDOT_PROGRESS", "1")
    loud = io.StringIO()
    assert list(progress(range(5), desc="epochs", stream=loud, min_interval=0)) == list(range(5))
    assert "epochs" in loud.getvalue() and "5/5" in loud.getvalue()
    assert loud.getvalue().endswith("\n")


@pytest.mark.slow
def test_snakemake_report_and_headless_render(demo_run: Path, tmp_path):
    from tests.conftest import snakemake

    root = demo_run / "results/biovid"
    page = (root / "report.html").read_text()
    assert "Method × dataset" in page and "mtpkdot" in page
    assert (root / "figures/per_fold.png").exists()
    out = snakemake(demo_run, "--report", str(tmp_path / "snakemake_report.html"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "snakemake_report.html").stat().st_size > 10_000
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("chromium not installed: the render check needs `apt-get install chromium`")
    shot = tmp_path / "report.png"
    check = subprocess.run(
        ["bash", "benchmarks/render_report.sh", str(root / "report.html"), str(shot)],
        cwd=Path(report.__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert shot.stat().st_size > 20_000


def test_teacher_table_over_folds(tmp_path):
    from pipeline_steps.layout import Layout

    layout = Layout(tmp_path, "biovid")
    assert report.teacher_table(layout, 2) is None  # not evaluated yet: no section
    for fold, acc in enumerate((0.6, 0.8)):
        path = layout.teacher_evaluation(fold)
        path.parent.mkdir(parents=True)
        score = {"accuracy": acc, "macro_f1": acc, "n": 4}
        path.write_text(
            json.dumps(
                {
                    "modality_teachers": {"video": score, "eda": score},
                    "fusion": score,
                    "fusion_without": {"eda": score},
                    "pool": {"joint": score},
                }
            )
        )
    table = report.teacher_table(layout, 2).set_index("teacher")
    assert table.loc["fusion without eda", "accuracy mean"] == pytest.approx(0.7)
    assert table.loc["eda teacher", "accuracy std"] == pytest.approx(0.1414214, rel=1e-6)
    markdown = report.to_markdown(pd.DataFrame(), 0.95, None, table.reset_index())
    assert "| fusion without eda | 0.700 | 0.141 |" in markdown


def fake_regression_results(root: Path) -> Layout:
    """Aff-Wild2-like evaluations: CCC of valence and arousal and their mean, per fold."""
    layout = Layout(root / "results", "affwild2")
    for fold, (v, a) in enumerate([(0.30, 0.50), (0.40, 0.60), (0.35, -0.20)]):
        for method in METHODS:
            shift = 0.1 if method == "mtpkdot" else 0.0
            result = {"ccc_valence": v + shift, "ccc_arousal": a, "n": 10}
            result["ccc_mean"] = (result["ccc_valence"] + a) / 2
            path = layout.evaluation(fold, method, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"method": method, "fold": fold, **result}))
    return layout


def test_regression_report_shows_ccc_over_folds(tmp_path):
    layout = fake_regression_results(tmp_path)
    per_fold = report.collect(layout, METHODS, N_FOLDS)  # metrics taken from the results
    assert report.metrics_in(per_fold) == ("ccc_valence", "ccc_arousal", "ccc_mean")
    table = report.build_table(per_fold, "affwild2", 0.95)
    row = table.set_index("method").loc["mtpkdot"]
    assert row["ccc_valence_mean"] == pytest.approx(0.45)
    assert row["ccc_valence_std"] == pytest.approx(0.05)
    assert row["ccc_mean_mean"] == pytest.approx((0.45 + 0.3) / 2)
    # CCC lies in [-1, 1]: arousal's wide interval goes below 0 and is clipped at 1
    assert -1.0 < row["ccc_arousal_ci_low"] < 0.0 and row["ccc_arousal_ci_high"] == 1.0
    assert "accuracy_mean" not in table.columns

    csv = tmp_path / "report.csv"
    table.to_csv(csv, index=False)
    columns = pd.read_csv(csv).columns
    for metric in ("ccc_valence", "ccc_arousal", "ccc_mean"):
        assert {f"{metric}_{k}" for k in ("mean", "std", "ci_low", "ci_high")} <= set(columns)

    md = report.to_markdown(table, 0.95, per_fold)
    assert "CCC valence mean ± std [95% CI]" in md and "CCC arousal" in md
    assert "CCC mean mean ± std [95% CI]" in md and "accuracy" not in md
    assert "| affwild2 | mtpkdot | 3 | 0.450 ± 0.050 [0.326, 0.574] |" in md
    assert "clipped to the metric range [-1, 1]" in md and "Per-fold test CCC mean:" in md
    assert "same videos" not in md
    assert "same videos" in report.to_markdown(table, 0.95, per_fold, shared_test=True)

    figs = tmp_path / "figures"
    figs.mkdir()
    figures = report.make_figures(layout, per_fold, METHODS, N_FOLDS, figs)
    page = report.to_html("affwild2", table, per_fold, 0.95, figures)
    assert "CCC valence mean ± std [95% CI]" in page and "<h3>CCC arousal</h3>" in page
    assert "Per-fold test CCC mean" in page and "accuracy" not in page.lower()
    shared = report.to_html("affwild2", table, per_fold, 0.95, figures, shared_test=True)
    assert "same videos" in shared and "same videos" not in page


def test_classification_report_keeps_accuracy_and_macro_f1(tmp_path):
    layout = fake_results(tmp_path, artifacts=False)
    per_fold = report.collect(layout, METHODS, N_FOLDS, report.TASK_METRICS["classification"])
    table = report.build_table(per_fold, "biovid", 0.95)
    assert {"accuracy_mean", "macro_f1_ci_high"} <= set(table.columns)
    assert not any(c.startswith("ccc") for c in table.columns)
    md = report.to_markdown(table, 0.95, per_fold)
    assert "accuracy mean ± std [95% CI] | macro-F1 mean ± std [95% CI] |" in md
    assert "Per-fold test accuracy:" in md and "CCC" not in md


def test_a_result_without_the_task_metrics_is_an_error(tmp_path):
    layout = fake_results(tmp_path, artifacts=False)
    with pytest.raises(KeyError, match="ccc_valence"):
        report.collect(layout, METHODS, N_FOLDS, report.TASK_METRICS["regression"])
