"""Where every artifact lives. Snakemake rules, dvc.yaml and the steps all use these paths.

Functions accept plain values or Snakemake wildcard strings (``"{fold}"``), so the rules can
build their patterns from the same definitions the steps write to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Paths of one dataset's results under ``results_dir``."""

    results_dir: str | Path
    dataset: str

    @property
    def root(self) -> Path:
        return Path(self.results_dir) / self.dataset

    @property
    def index(self) -> Path:
        """Samples table with subjects, labels, folds and per-fold splits."""
        return self.root / "index.parquet"

    @property
    def demo_manifest(self) -> Path:
        """Written by make_demo_data: which demo dataset (root, params) is on disk."""
        return self.root / "demo_data.json"

    @property
    def qc_report(self) -> Path:
        return self.root / "qc_report.json"

    @property
    def parent_run(self) -> Path:
        """MLflow parent run of the current pipeline run (created before jobs fan out)."""
        return self.root / "mlflow_parent_run.json"

    def video_shard(self, shard: int | str) -> Path:
        return self.root / "features" / f"video-{shard}.parquet"

    def physio_shard(self, modality: str) -> Path:
        return self.root / "features" / f"{modality}.parquet"

    def fold_dir(self, fold: int | str) -> Path:
        return self.root / f"fold{fold}"

    def teacher(self, fold: int | str, modality: str) -> Path:
        return self.fold_dir(fold) / "teachers" / f"{modality}.pt"

    def embeddings(self, fold: int | str, modality: str) -> Path:
        """Frozen modality-teacher embeddings of every sample of the fold."""
        return self.fold_dir(fold) / "embeddings" / f"{modality}.pt"

    def fusion_teacher(self, fold: int | str) -> Path:
        return self.fold_dir(fold) / "teachers" / "fusion.pt"

    def teacher_pool(self, fold: int | str) -> Path:
        return self.fold_dir(fold) / "teachers" / "pool.pt"

    def pool_outputs(self, fold: int | str) -> Path:
        """Cached teacher-pool outputs for the fold's train and val samples (student input)."""
        return self.fold_dir(fold) / "teachers" / "pool_outputs.pt"

    def student(self, fold: int | str, method: str, seed: int | str) -> Path:
        """The student of ``method`` trained with student seed ``seed`` (``run.seeds``)."""
        return self._stage_dir(fold, "students", seed) / f"{method}.pt"

    def seed_evaluations(self, fold: int | str, seed: int | str) -> Path:
        """The folder of every student evaluation of one fold and student seed."""
        return self._stage_dir(fold, "eval", seed)

    def evaluation(self, fold: int | str, method: str, seed: int | str) -> Path:
        """Test metrics of one student (fold, method, seed)."""
        return self.seed_evaluations(fold, seed) / f"{method}.json"

    def predictions(self, fold: int | str, method: str, seed: int | str) -> Path:
        """Per-sample test predictions of one student, beside its metrics."""
        return self.evaluation(fold, method, seed).with_suffix(".predictions.csv")

    def teacher_evaluation(self, fold: int | str) -> Path:
        """Test-fold scores of every teacher, and of the joint teacher with a modality missing."""
        return self.fold_dir(fold) / "eval" / "teachers.json"

    def _stage_dir(self, fold: int | str, kind: str, seed: int | str | None) -> Path:
        """``fold<k>/<kind>``, or ``fold<k>/<kind>/seed<s>`` for a student's (seeded) stage."""
        folder = self.fold_dir(fold) / kind
        return folder if seed is None else folder / f"seed{seed}"

    def metrics(
        self, fold: int | str, stage: str, name: str, seed: int | str | None = None
    ) -> Path:
        """Small metrics JSON that DVC reads; ``seed``: a student stage's seed (None: a
        teacher stage, trained once per fold with ``run.seed``)."""
        return self._stage_dir(fold, "metrics", seed) / f"{stage}-{name}.json"

    def resume(self, fold: int | str, stage: str, name: str, seed: int | str | None = None) -> Path:
        """Per-epoch resume state of a training stage (pipeline_steps.resume; not an output)."""
        return self._stage_dir(fold, "resume", seed) / f"{stage}-{name}.pt"

    def history(
        self, fold: int | str, stage: str, name: str, seed: int | str | None = None
    ) -> Path:
        """Per-epoch training history CSV beside the metrics JSON (DVC plots, report curves)."""
        return self.metrics(fold, stage, name, seed).with_suffix(".history.csv")

    def student_similarity(self, fold: int | str, method: str, seed: int | str) -> Path:
        """Student similarity matrices of a fixed batch at 0/50/100 % of training."""
        return self.student(fold, method, seed).with_suffix(".similarity.npz")

    def pool_embeddings(self, fold: int | str) -> Path:
        """Pool teachers' embeddings of the validation samples before/after alignment."""
        return self.teacher_pool(fold).with_name("pool_embeddings.npz")

    @property
    def report_csv(self) -> Path:
        return self.root / "report.csv"

    @property
    def paired_csv(self) -> Path:
        """The report's paired comparison with visual_only, one row per method."""
        return self.root / "paired.csv"

    @property
    def paired_units_csv(self) -> Path:
        """Every test unit's paired difference (method - visual_only), seed-averaged."""
        return self.root / "paired_units.csv"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"


def layout_for(params: dict, dataset: str) -> Layout:
    """The layout for ``dataset`` under the run's results directory."""
    return Layout(params["run"]["results_dir"], dataset)
