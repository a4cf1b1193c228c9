"""Per-unit scores from the predictions CSVs, and the report's paired comparison (table,
figure, MLflow parent metrics) on a fake results tree with two student seeds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline_steps import report, unit_scores
from pipeline_steps.layout import Layout
from pipeline_steps.paired_stats import paired_table
from pipeline_steps.tasks import Task
from tests.conftest import tiny_params

M = -5.0  # an unannotated frame


def write_predictions(layout: Layout, fold: int, method: str, seed: int, frame: pd.DataFrame):
    path = layout.predictions(fold, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def test_subject_accuracy_from_a_hand_made_predictions_csv(tmp_path: Path) -> None:
    layout = Layout(tmp_path, "biovid")
    ids = [f"c{i}" for i in range(6)]
    index = pd.DataFrame(
        {
            "sample_id": [*ids, "x"],
            "subject": [*"AAAABB", "C"],
            "split_0": ["test"] * 6 + ["train"],
        }
    )
    predictions = pd.DataFrame(
        {
            "sample_id": ids,
            "subject": list("AAAABB"),
            "label": [0, 1, 1, 0, 1, 0],
            "pred": [0, 1, 1, 1, 0, 1],  # A: 3 of 4 right, B: none
        }
    )
    write_predictions(layout, 0, "pkd", 0, predictions)
    got = unit_scores.unit_scores(
        layout, index, Task("classification", ["a", "b"]), ["pkd"], 1, [0]
    )
    assert got.unit == "subject" and got.skipped == []
    assert got.scores[["unit", "score", "n"]].values.tolist() == [["A", 0.75, 4], ["B", 0.0, 2]]


def test_video_ccc_from_a_hand_made_predictions_csv(tmp_path: Path) -> None:
    """v1: valence predicted exactly, arousal 0.5 too high (CCC 2/3), the -5 frames ignored:
    score (1 + 2/3) / 2; v2: a constant prediction, CCC 0; v3: nothing annotated, skipped."""
    layout = Layout(tmp_path, "affwild2")
    windows = {
        "v1@0": ("v1", [0, 0, M], [0, 0, M], 0.0, 0.5),
        "v1@3": ("v1", [1, 1, M], [1, 1, M], 1.0, 1.5),
        "v2@0": ("v2", [0, 1, M], [0, 1, M], 0.5, 0.5),
        "v3@0": ("v3", [M, M, M], [M, M, M], 0.3, 0.3),
    }
    index = pd.DataFrame(
        {
            "sample_id": list(windows),
            "video": [w[0] for w in windows.values()],
            "valence": [np.array(w[1], np.float32) for w in windows.values()],
            "arousal": [np.array(w[2], np.float32) for w in windows.values()],
            "split_0": "test",
        }
    )
    predictions = pd.DataFrame(
        {
            "sample_id": list(windows),
            "video": [w[0] for w in windows.values()],
            "pred_valence": [w[3] for w in windows.values()],
            "pred_arousal": [w[4] for w in windows.values()],
        }
    )
    write_predictions(layout, 0, "mtpkdot", 1, predictions)
    got = unit_scores.unit_scores(layout, index, Task("regression", []), ["mtpkdot"], 1, [1])
    scores = got.scores.set_index("unit")["score"]
    assert got.unit == "video" and list(scores.index) == ["v1", "v2"]
    assert scores["v1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    assert scores["v2"] == pytest.approx(0.0, abs=1e-6)
    assert len(got.skipped) == 1 and "video v3" in got.skipped[0]


def test_a_predictions_file_missing_a_test_sample_is_an_error(tmp_path: Path) -> None:
    layout = Layout(tmp_path, "biovid")
    index = pd.DataFrame({"sample_id": ["a", "b"], "subject": ["A", "A"], "split_0": "test"})
    frame = pd.DataFrame({"sample_id": ["a"], "subject": ["A"], "label": [0], "pred": [0]})
    write_predictions(layout, 0, "pkd", 0, frame)
    with pytest.raises(ValueError, match=r"pkd\.predictions\.csv: 1 rows .*\(1 missing"):
        unit_scores.unit_scores(layout, index, Task("classification", ["a", "b"]), ["pkd"], 1, [0])


METHODS = ["visual_only", "pkd", "mtpkdot"]
SEEDS = [0, 1]
SUBJECTS = [f"s{i}" for i in range(6)]  # fold 0 tests s0-s2, fold 1 s3-s5
CLIPS = 4


def fake_tree(root: Path) -> tuple[Path, pd.DataFrame]:
    """params.yaml, index and every evaluation (JSON + predictions) of a 2-fold, 2-seed run;
    returns the params file and the per-(method, seed, subject) accuracies written."""
    params = tiny_params()
    params["run"].update(results_dir=str(root / "results"), seeds=SEEDS)
    params["index_dataset"]["n_folds"] = 2
    params["train_student"]["methods"] = METHODS
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    layout = Layout(root / "results", "biovid")
    rows = []
    for i, subject in enumerate(SUBJECTS):
        for c in range(CLIPS):
            test_fold = 0 if i < 3 else 1
            rows.append(
                {
                    "sample_id": f"{subject}-{c}",
                    "subject": subject,
                    "class_name": "BL1" if c % 2 == 0 else "PA4",
                    "label": c % 2,
                    "split_0": "test" if test_fold == 0 else "train",
                    "split_1": "test" if test_fold == 1 else "train",
                }
            )
    index = pd.DataFrame(rows)
    layout.index.parent.mkdir(parents=True)
    index.to_parquet(layout.index)
    rng = np.random.default_rng(3)
    written = []
    for method in METHODS:
        for seed in SEEDS:
            for fold in (0, 1):
                test = index[index[f"split_{fold}"] == "test"].reset_index(drop=True)
                bias = {"visual_only": 0.5, "pkd": 0.55, "mtpkdot": 0.75}[method]
                right = rng.random(len(test)) < bias
                pred = np.where(right, test["label"], 1 - test["label"])
                frame = test[["sample_id", "subject", "label"]].assign(pred=pred)
                write_predictions(layout, fold, method, seed, frame)
                acc = float(right.mean())
                result = {"method": method, "fold": fold, "seed": seed, "n": len(test)}
                layout.evaluation(fold, method, seed).write_text(
                    json.dumps(result | {"accuracy": acc, "macro_f1": acc})
                )
                per_subject = frame.assign(right=right).groupby("subject")["right"].mean()
                written += [
                    {"method": method, "seed": seed, "unit": s, "score": v}
                    for s, v in per_subject.items()
                ]
    return root / "params.yaml", pd.DataFrame(written)


def test_report_pairs_methods_per_subject_over_seeds(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params_file, written = fake_tree(tmp_path)
    report.main(["--params", str(params_file), "--dataset", "biovid"])
    layout = Layout(tmp_path / "results", "biovid")

    expected = paired_table(written, "visual_only", level=0.95).set_index("method")
    paired = pd.read_csv(layout.paired_csv).set_index("method")
    assert list(paired.index) == ["mtpkdot", "pkd"]
    pd.testing.assert_frame_equal(paired, expected, check_dtype=False, atol=1e-12)
    assert (paired["n_units"] == len(SUBJECTS)).all()
    units = pd.read_csv(layout.paired_units_csv)
    assert len(units) == 2 * len(SUBJECTS)
    means = written.groupby(["method", "unit"])["score"].mean().unstack("method")
    mtpkdot = units[units["method"] == "mtpkdot"].set_index("unit")["diff"]
    np.testing.assert_allclose(mtpkdot, (means["mtpkdot"] - means["visual_only"])[mtpkdot.index])

    md = layout.report_md.read_text()
    assert "## Paired comparison with visual_only, per test subject" in md
    assert "Unit = test subject (n = 6)" in md and "averaged over 2 student seeds" in md
    assert "mean over 2 student seeds" in md  # the per-fold table's note
    assert (layout.figures_dir / "paired.png").stat().st_size > 5000
    page = layout.report_html.read_text()
    assert "Paired differences per test subject" in page and "per test subject</h2>" in page
    assert pd.read_csv(layout.report_csv)["n_seeds"].tolist() == [2, 2, 2]

    parent = json.loads(layout.parent_run.read_text())["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.get_run(parent).data.metrics
    for method in ("pkd", "mtpkdot"):
        assert logged[f"paired_diff_{method}"] == pytest.approx(expected.loc[method, "mean_diff"])
        assert logged[f"paired_ci_low_{method}"] == pytest.approx(expected.loc[method, "ci_low"])
        assert logged[f"paired_p_holm_{method}"] == pytest.approx(expected.loc[method, "p_holm"])
    artifacts = {a.path for a in client.list_artifacts(parent)}
    assert {"paired.csv", "paired_units.csv", "figures"} <= artifacts
