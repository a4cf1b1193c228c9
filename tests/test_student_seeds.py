"""Student seeds (``run.seeds``): per seed, every method starts from the same weights and sees
the same batches; another seed changes both. Runs train_student (one epoch) on a copy of the
tiny demo run's fold 0 inputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline_steps import trainer
from pipeline_steps.layout import Layout

pytestmark = pytest.mark.slow

METHODS = ("visual_only", "mtpkdot")
SEEDS = (0, 1)


def fold0_copy(demo_run: Path, root: Path) -> Path:
    """The demo run's params (one student epoch, two seeds), index, video shards and fold 0
    teachers: what train_student reads; no students, no MLflow parent run."""
    src, dst = Layout(demo_run / "results", "biovid"), Layout(root / "results", "biovid")
    dst.teacher(0, "video").parent.mkdir(parents=True)
    shutil.copy(src.index, dst.index)
    shutil.copytree(src.root / "features", dst.root / "features")
    for name in ("video.pt", "pool_outputs.pt"):
        shutil.copy(src.fold_dir(0) / "teachers" / name, dst.fold_dir(0) / "teachers" / name)
    params = yaml.safe_load((demo_run / "params.yaml").read_text())
    params["run"]["seeds"] = list(SEEDS)
    params["train_student"].update(epochs=1, patience=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def seeded_students(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """train_student for each method and seed; (method, seed) -> first batch, start snapshot."""
    from pipeline_steps import train_student

    root = fold0_copy(demo_run, tmp_path_factory.mktemp("seeds"))
    layout = Layout(root / "results", "biovid")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    original = trainer.train_batches
    firsts: list[torch.Tensor] = []

    def recording(n: int, batch_size: int, generator: torch.Generator):  # noqa: ANN202
        batches = list(original(n, batch_size, generator))
        firsts.append(batches[0].clone())
        return iter(batches)

    mp.setattr(trainer, "train_batches", recording)
    out = {}
    try:
        for method in METHODS:
            for seed in SEEDS:
                firsts.clear()
                argv = ["--dataset", "biovid", "--fold", "0", "--method", method]
                train_student.main(["--params", "params.yaml", *argv, "--seed", str(seed)])
                with np.load(layout.student_similarity(0, method, seed)) as sim:
                    start = sim["student"][0]
                out[method, seed] = {"first_batch": firsts[0], "start": start}
    finally:
        mp.undo()
    out["root"] = root
    return out


def test_same_seed_same_start_and_batches_for_every_method(seeded_students: dict) -> None:
    for seed in SEEDS:
        a, b = (seeded_students[m, seed] for m in METHODS)
        assert torch.equal(a["first_batch"], b["first_batch"])
        np.testing.assert_array_equal(a["start"], b["start"])


def test_another_seed_changes_start_and_batches(seeded_students: dict) -> None:
    for method in METHODS:
        a, b = (seeded_students[method, s] for s in SEEDS)
        assert not torch.equal(a["first_batch"], b["first_batch"])
        assert not np.array_equal(a["start"], b["start"])


def test_each_seed_has_its_files_and_mlflow_child_run(seeded_students: dict) -> None:
    from mlflow.tracking import MlflowClient

    root = seeded_students["root"]
    layout = Layout(root / "results", "biovid")
    for method in METHODS:
        for seed in SEEDS:
            saved = torch.load(layout.student(0, method, seed), weights_only=True)
            assert saved["seed"] == seed and saved["method"] == method
            assert json.loads(layout.metrics(0, "train_student", method, seed).read_text())
            assert layout.history(0, "train_student", method, seed).exists()
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.stage = 'train_student'",
    )
    found = {(r.data.tags["method"], r.data.tags["seed"], r.data.params["seed"]) for r in runs}
    assert found == {(m, str(s), str(s)) for m in METHODS for s in SEEDS}
