"""Results report: method x dataset table over folds, per-fold results and figures.

Writes, under ``results/<dataset>/``:

- ``report.csv``, ``report.md``: one row per method, mean, std and the t-interval of the mean
  over folds of each test metric, each fold's score being the mean over the student seeds
  (``run.seeds``; the interval is clipped to the metric's range): accuracy and
  macro-F1 for a classification dataset, CCC of valence, arousal and their mean for a
  regression dataset (``datasets.<name>.task``; the names ``evaluate`` writes);
- ``report.html``: a self-contained page (figures embedded) with the table, per-fold results,
  training curves, the student's similarity matrices at 0/50/100 % of training (paper fig. 4)
  and a 2-D PCA of teacher representations before/after alignment (fig. 5);
- ``figures/*.png``: the same figures as files (``snakemake --report`` shows them);
- ``paired.csv``, ``paired_units.csv`` and a report section: every method against
  ``visual_only`` per test subject (video for Aff-Wild2), seed-averaged
  (:mod:`pipeline_steps.report_paired`).

Figures whose artifacts a training step did not write are replaced by a note. The table,
the means and the figures are logged to the pipeline's MLflow parent run.

Artifacts read (all optional; formats are written by ``pipeline_steps.trainer`` helpers):

- per-epoch history ``fold<k>/metrics/seed<s>/train_student-<method>.history.csv``
  (``write_history``); without it the curves come from the MLflow child runs' metric history;
- ``fold<k>/students/seed<s>/<method>.similarity.npz`` (``write_similarity_snapshots``; fold 0,
  first seed);
- ``fold<k>/teachers/pool_embeddings.npz`` (``write_teacher_embeddings``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from pipeline_steps import job_matrix, report_data, report_paired
from pipeline_steps.atomic import atomic_path, write_text
from pipeline_steps.config import dataset_params, load_params, step_parser, student_seeds
from pipeline_steps.folds import folds_share_test_set
from pipeline_steps.layout import Layout, layout_for
from pipeline_steps.progress import progress
from pipeline_steps.tasks import Task
from pipeline_steps.unit_scores import unit_scores

TASK_METRICS = {
    "classification": ("accuracy", "macro_f1"),
    "regression": ("ccc_valence", "ccc_arousal", "ccc_mean"),
}
METRICS = TASK_METRICS["classification"]
LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "ccc_valence": "CCC valence",
    "ccc_arousal": "CCC arousal",
    "ccc_mean": "CCC mean",
}
RANGES = {"accuracy": (0.0, 1.0), "macro_f1": (0.0, 1.0)} | {
    m: (-1.0, 1.0) for m in TASK_METRICS["regression"]
}
CURVE_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_ccc_mean")


def metrics_in(frame: pd.DataFrame) -> tuple[str, ...]:
    """The task metrics a per-fold frame or a table holds (classification when empty)."""
    for metrics in TASK_METRICS.values():
        if all(m in frame.columns or f"{m}_mean" in frame.columns for m in metrics):
            return metrics
    return METRICS


def headline(metrics: tuple[str, ...]) -> str:
    """The metric of the per-fold table and figure: accuracy, or mean CCC."""
    return "ccc_mean" if "ccc_mean" in metrics else metrics[0]


# ----------------------------------------------------------------------------- table


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


def collect(
    layout: Layout,
    methods: list[str],
    n_folds: int,
    metrics: tuple[str, ...] | None = None,
    seeds: Sequence[int] = (0,),
) -> pd.DataFrame:
    """Test metrics of every method, fold and student seed (all must be present): one row
    per (method, fold, seed).

    ``metrics``: the task's (:data:`TASK_METRICS`); by default those of the first result."""
    rows = []
    for method in methods:
        for fold in range(n_folds):
            for seed in seeds:
                path = layout.evaluation(fold, method, seed)
                if not path.exists():
                    raise FileNotFoundError(f"{path}: evaluation missing; run evaluate first")
                result = json.loads(path.read_text())
                if metrics is None:
                    metrics = metrics_in(pd.DataFrame(columns=list(result)))
                missing = [m for m in metrics if m not in result]
                if missing:
                    raise KeyError(f"{path}: no {missing} (has {sorted(result)})")
                scores = {m: result[m] for m in metrics}
                rows.append({"method": method, "fold": fold, "seed": seed, **scores})
    return pd.DataFrame(rows)


def fold_means(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, fold): each metric averaged over the student seeds, ``n_seeds``."""
    metrics = list(metrics_in(per_run))
    grouped = per_run.groupby(["method", "fold"], sort=False)
    out = grouped[metrics].mean().reset_index()
    out.insert(2, "n_seeds", grouped.size().to_numpy())
    return out


def build_table(per_fold: pd.DataFrame, dataset: str, level: float) -> pd.DataFrame:
    """One row per method over folds (a fold's score: its mean over seeds, when ``per_fold``
    has one row per seed); each t-interval is clipped to its metric's range."""
    if "seed" in per_fold.columns:
        per_fold = fold_means(per_fold)
    rows = []
    for method, group in per_fold.groupby("method", sort=False):
        n_seeds = int(group["n_seeds"].min()) if "n_seeds" in group else 1
        row = {"dataset": dataset, "method": method, "n_folds": len(group), "n_seeds": n_seeds}
        for metric in metrics_in(per_fold):
            lo, hi = RANGES[metric]
            s = summarise(group[metric].tolist(), level)
            s["ci_low"], s["ci_high"] = max(lo, s["ci_low"]), min(hi, s["ci_high"])
            for key, value in s.items():
                row[f"{metric}_{key}"] = round(value, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def teacher_table(layout: Layout, n_folds: int) -> pd.DataFrame | None:
    """Test scores of every teacher and of the joint teacher with one privileged modality
    missing (``evaluate_teachers``), mean ± std over folds; None when not evaluated."""
    paths = [layout.teacher_evaluation(fold) for fold in range(n_folds)]
    if not all(p.exists() for p in paths):
        return None
    rows: dict[str, list[float]] = {}
    for path in paths:
        result = json.loads(path.read_text())
        metric = "accuracy" if "accuracy" in result["fusion"] else "ccc_mean"
        entries = {f"{m} teacher": r for m, r in result["modality_teachers"].items()}
        entries["fusion (all modalities)"] = result["fusion"]
        entries |= {f"fusion without {m}": r for m, r in result["fusion_without"].items()}
        entries |= {f"pool: {m}": r for m, r in result["pool"].items()}
        for name, scores in entries.items():
            rows.setdefault(name, []).append(scores[metric])
    return pd.DataFrame(
        [
            {
                "teacher": name,
                f"{metric} mean": np.mean(v),
                f"{metric} std": np.std(v, ddof=1) if len(v) > 1 else 0.0,
            }
            for name, v in rows.items()
        ]
    )


def ci_note(
    level: float, metrics: tuple[str, ...] = METRICS, shared_test: bool = False, n_seeds: int = 1
) -> str:
    """How to read the table; ``shared_test``: every fold tests on the same samples."""
    pct = int(round(level * 100))
    lo, hi = (f"{v:g}" for v in RANGES[metrics[0]])
    note = (
        f"Mean ± sample std over test folds; [{pct}% t-interval of the mean], clipped to the "
        f"metric range [{lo}, {hi}]."
    )
    if n_seeds > 1:
        note += (
            f" Each fold's score (also in the per-fold table) is the mean over {n_seeds} "
            "student seeds, so the spread is over folds, not seeds."
        )
    if shared_test:
        note += (
            " Every fold tests on the same videos and differs only in its validation people:"
            " the spread is that of training and model selection, not of test subjects."
        )
    return note


def _cell(r: dict, m: str) -> str:
    return (
        f"{r[f'{m}_mean']:.3f} ± {r[f'{m}_std']:.3f} "
        f"[{r[f'{m}_ci_low']:.3f}, {r[f'{m}_ci_high']:.3f}]"
    )


def to_markdown(
    table: pd.DataFrame,
    level: float,
    per_fold: pd.DataFrame | None = None,
    teachers: pd.DataFrame | None = None,
    shared_test: bool = False,
) -> str:
    pct = int(round(level * 100))
    metrics = metrics_in(table)
    lines = [
        "| dataset | method | folds | "
        + " | ".join(f"{LABELS[m]} mean ± std [{pct}% CI]" for m in metrics)
        + " |",
        "|---" * (3 + len(metrics)) + "|",
    ]
    for r in table.to_dict("records"):
        cells = [_cell(r, m) for m in metrics]
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['n_folds']} | " + " | ".join(cells) + " |"
        )
    lines += ["", ci_note(level, metrics, shared_test, n_seeds_of(table))]
    if per_fold is not None:
        key = headline(metrics)
        wide = per_fold_wide(per_fold, key)
        lines += ["", f"Per-fold test {LABELS[key]}:", ""]
        lines.append("| method | " + " | ".join(f"fold {f}" for f in wide.columns) + " |")
        lines.append("|---" * (len(wide.columns) + 1) + "|")
        for method, row in wide.iterrows():
            lines.append(f"| {method} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    if teachers is not None:
        lines += [
            "",
            "Teachers on the test folds (missing modality = its training-mean embedding):",
        ]
        lines += ["", "| " + " | ".join(teachers.columns) + " |"]
        lines.append("|---" * len(teachers.columns) + "|")
        for row in teachers.itertuples(index=False):
            lines.append(f"| {row[0]} | " + " | ".join(f"{v:.3f}" for v in row[1:]) + " |")
    return "\n".join(lines) + "\n"


def n_seeds_of(table: pd.DataFrame) -> int:
    """Student seeds behind each fold's score in a summary table (1 when not recorded)."""
    return int(table["n_seeds"].min()) if "n_seeds" in table and len(table) else 1


def per_fold_wide(per_fold: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Method x fold of ``metric`` (a fold's mean over seeds)."""
    if "seed" in per_fold.columns:
        per_fold = fold_means(per_fold)
    methods = list(dict.fromkeys(per_fold["method"]))
    return per_fold.pivot(index="method", columns="fold", values=metric).loc[methods]


# ----------------------------------------------------------------------------- curves


def load_histories(
    layout: Layout, methods: list[str], n_folds: int, seeds: Sequence[int] = (0,)
) -> dict[str, pd.DataFrame]:
    """Per-epoch history of each student (method -> rows of fold, seed, epoch, metrics), from
    the history CSVs, else from the MLflow child runs of the current parent run."""
    out: dict[str, pd.DataFrame] = {}
    missing = []
    for method in methods:
        frames = []
        for fold in range(n_folds):
            for seed in seeds:
                path = layout.history(fold, "train_student", method, seed)
                if path.exists():
                    frames.append(pd.read_csv(path).assign(fold=fold, seed=seed))
                else:
                    missing.append((method, fold, seed))
        if frames:
            out[method] = pd.concat(frames, ignore_index=True)
    if missing:
        for method, frame in _mlflow_histories(layout, missing).items():
            out[method] = pd.concat([out.get(method), frame], ignore_index=True)
    return out


def _mlflow_histories(
    layout: Layout, wanted: list[tuple[str, int, int]]
) -> dict[str, pd.DataFrame]:
    if not layout.parent_run.exists():
        return {}
    try:
        from pipeline_steps.tracking import client, retry

        info = json.loads(layout.parent_run.read_text())
        mc = client()
        runs = retry(
            lambda: mc.search_runs(
                [info["experiment_id"]],
                filter_string=f"tags.mlflow.parentRunId = '{info['run_id']}' "
                "and tags.stage = 'train_student'",
                max_results=1000,
            )
        )
    except Exception as err:  # noqa: BLE001 - curves are optional; the table is not
        print(f"[report] no training curves from MLflow: {err}")
        return {}
    frames: dict[str, list[pd.DataFrame]] = {}
    wanted_set = {(m, str(f), str(s)) for m, f, s in wanted}
    for run in runs:
        tags = run.data.tags
        method, fold, seed = tags.get("method"), tags.get("fold"), tags.get("seed")
        if (method, fold, seed) not in wanted_set:
            continue
        rows: dict[int, dict[str, float]] = {}
        for key in CURVE_KEYS:
            for m in retry(lambda k=key, r=run.info.run_id: mc.get_metric_history(r, k)):
                rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
        if rows:
            frame = pd.DataFrame(sorted(rows.values(), key=lambda r: r["epoch"]))
            frames.setdefault(method, []).append(frame.assign(fold=int(fold), seed=int(seed)))
    return {m: pd.concat(f, ignore_index=True) for m, f in frames.items()}


# ----------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_per_fold(per_fold: pd.DataFrame):  # noqa: ANN201
    plt = _pyplot()
    key = headline(metrics_in(per_fold))
    wide = per_fold_wide(per_fold, key)
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    x = np.arange(len(wide.columns))
    width = 0.8 / max(1, len(wide.index))
    for i, (method, row) in enumerate(wide.iterrows()):
        ax.bar(x + i * width, row.to_numpy(), width, label=method)
    ax.set_xticks(x + 0.4 - width / 2, [f"fold {f}" for f in wide.columns])
    ax.set_ylim(*RANGES[key])
    ax.set_ylabel(f"test {LABELS[key]}")
    ax.legend(fontsize=8, ncols=min(4, len(wide.index)))
    fig.tight_layout()
    return fig


def fig_curves(histories: dict[str, pd.DataFrame]):  # noqa: ANN201
    plt = _pyplot()
    keys = [k for k in CURVE_KEYS if any(k in h for h in histories.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for method, frame in histories.items():
            if key not in frame:
                continue
            mean = frame.groupby("epoch")[key].mean()
            ax.plot(mean.index, mean.to_numpy(), label=method)
        ax.set_title(key.replace("_", " "))
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def load_similarity(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def fig_similarity(sim: dict[str, np.ndarray], method: str):  # noqa: ANN201
    """Student similarity at each training fraction, samples sorted by label (+ the teacher's)."""
    plt = _pyplot()
    order = np.argsort(sim["labels"], kind="stable") if "labels" in sim else slice(None)
    mats = [
        (f"student, {int(round(100 * p))} %", m)
        for p, m in zip(sim["progress"], sim["student"], strict=True)
    ]
    if "teacher" in sim:
        mats.append(("teacher", sim["teacher"]))
    fig, axes = plt.subplots(1, len(mats), figsize=(3 * len(mats), 3.1), squeeze=False)
    for ax, (title, mat) in zip(axes[0], mats, strict=True):
        im = ax.imshow(
            mat[np.ix_(order, order)] if not isinstance(order, slice) else mat,
            vmin=-1,
            vmax=1,
            cmap="coolwarm",
        )
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cosine similarity")
    fig.suptitle(f"{method}: batch similarity matrices (samples sorted by class)", fontsize=10)
    return fig


def pca_2d(x: np.ndarray) -> np.ndarray:
    """Project rows of ``x`` on their first two principal components (SVD, no new dependency)."""
    x = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def fig_embeddings(emb: dict[str, np.ndarray]):  # noqa: ANN201
    """2-D PCA of every teacher's representations before and after alignment (one PCA per
    panel over all teachers), colour = teacher, marker = class."""
    plt = _pyplot()
    names = [str(n) for n in emb["names"]]
    labels = emb["labels"]
    markers = "ox^s*Dv+"
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), squeeze=False)
    for ax, key, title in zip(
        axes[0], ("before", "after"), ("before alignment", "after alignment"), strict=True
    ):
        z = emb[key]
        p, n, d = z.shape
        xy = pca_2d(z.reshape(p * n, d)).reshape(p, n, 2)
        for t, name in enumerate(names):
            for c in np.unique(labels):
                sel = labels == c
                ax.scatter(
                    xy[t, sel, 0],
                    xy[t, sel, 1],
                    s=12,
                    color=f"C{t}",
                    marker=markers[int(c) % len(markers)],
                    label=name if c == labels.min() else None,
                    alpha=0.75,
                )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=8, title="teacher (marker = class)", title_fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig, path: Path) -> str:  # noqa: ANN001
    """Write ``fig`` as PNG and return it base64-encoded for the HTML page."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    path.write_bytes(data)
    return base64.b64encode(data).decode("ascii")


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;
max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
.note{color:#666;font-size:.9rem}.missing{background:#fff8e1;border-left:4px solid #f0b400;
padding:.5rem 1rem;color:#5d4600}img{max-width:100%}
"""


def _html_table(frame: pd.DataFrame, fmt: str = "{:.3f}") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f"<td>{fmt.format(v) if isinstance(v, float) else html.escape(str(v))}</td>"
            for v in row
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def summary_frame(table: pd.DataFrame, level: float) -> pd.DataFrame:
    pct = int(round(level * 100))
    out = table[["dataset", "method", "n_folds"]].copy()
    for m in metrics_in(table):
        out[f"{LABELS[m]} mean ± std [{pct}% CI]"] = [_cell(r, m) for r in table.to_dict("records")]
    return out


def to_html(
    dataset: str,
    table: pd.DataFrame,
    per_fold: pd.DataFrame,
    level: float,
    figures: dict,
    teachers: pd.DataFrame | None = None,
    shared_test: bool = False,
    data_html: str = "",
    paired_html: str = "",
) -> str:
    """``figures``: section title -> (base64 PNG, caption) or (None, note when missing);
    ``paired_html``: the paired section, after the table; ``data_html``: the data section
    (:mod:`pipeline_steps.report_data`), last."""
    note = ci_note(level, metrics_in(per_fold), shared_test, n_seeds_of(table))
    parts = [
        f"<h1>MT-PKDOT results: {html.escape(dataset)}</h1>",
        "<h2>Method × dataset</h2>",
        _html_table(summary_frame(table, level)),
        f'<p class="note">{html.escape(note)}</p>',
        paired_html,
        "<h2>Per-fold test results</h2>",
    ]
    for m in metrics_in(per_fold):
        wide = per_fold_wide(per_fold, m)
        frame = wide.reset_index()
        frame.columns = ["method", *[f"fold {f}" for f in wide.columns]]
        parts += [f"<h3>{html.escape(LABELS[m])}</h3>", _html_table(frame)]
    if teachers is not None:
        parts += [
            "<h2>Teachers and missing-modality robustness</h2>",
            _html_table(teachers),
            '<p class="note">A missing modality is replaced by its training-mean embedding.</p>',
        ]
    for title, (data, caption) in figures.items():
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if data is None:
            parts.append(f'<p class="missing">{html.escape(caption)}</p>')
        else:
            parts.append(
                f'<figure><img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
                f'<figcaption class="note">{html.escape(caption)}</figcaption></figure>'
            )
    parts.append(data_html)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>mtpkdot report: {html.escape(dataset)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def make_figures(
    layout: Layout,
    per_fold: pd.DataFrame,
    methods: list[str],
    n_folds: int,
    figs: Path,
    seeds: Sequence[int] = (0,),
    paired: report_paired.PairedSection | None = None,
) -> dict[str, tuple[str | None, str]]:
    """Write the figures into ``figs``; title -> (base64 PNG, caption) or (None, note)."""
    out: dict[str, tuple[str | None, str]] = {}
    tasks = ["per_fold", "paired", "curves", "similarity", "embeddings"]
    for task in progress(tasks, desc="[report] figures"):
        if task == "paired":
            if paired is not None:
                out[f"Paired differences per test {paired.unit}"] = (
                    save_figure(report_paired.figure(paired, _pyplot()), figs / "paired.png"),
                    f"Each point: one test {paired.unit}'s score of the method minus "
                    f"{report_paired.BASELINE}'s, seed-averaged; bar: their mean; line: no "
                    "difference.",
                )
        elif task == "per_fold":
            label = LABELS[headline(metrics_in(per_fold))]
            out[f"Per-fold test {label}"] = (
                save_figure(fig_per_fold(per_fold), figs / "per_fold.png"),
                f"Test {label} of each method on each fold's test set.",
            )
        elif task == "curves":
            hist = load_histories(layout, methods, n_folds, seeds)
            out["Training curves"] = (
                (
                    save_figure(fig_curves(hist), figs / "curves.png"),
                    "Student training loss, validation loss and validation score per "
                    "epoch (mean over folds and seeds).",
                )
                if hist
                else (None, "No per-epoch history found (history CSVs or MLflow runs).")
            )
        elif task == "similarity":
            method = "mtpkdot" if "mtpkdot" in methods else methods[-1]
            path = layout.student_similarity(0, method, seeds[0])
            sim = load_similarity(path)
            out["Student similarity during training (fig. 4)"] = (
                (
                    save_figure(fig_similarity(sim, method), figs / "similarity.png"),
                    f"Cosine similarity of a fixed batch's {method} student representations "
                    f"at 0, 50 and 100 % of training, fold 0, seed {seeds[0]}.",
                )
                if sim is not None
                else (None, f"Not available: {path} was not written.")
            )
        else:
            emb = layout.pool_embeddings(0)
            data = load_similarity(emb)
            out["Teacher representations before/after alignment (fig. 5)"] = (
                (
                    save_figure(fig_embeddings(data), figs / "embeddings.png"),
                    "2-D PCA of each pool teacher's representations of fold 0's validation "
                    "samples, before and after adapter alignment.",
                )
                if data is not None
                else (None, f"Not available: {emb} was not written.")
            )
    return out


def main(argv: list[str] | None = None) -> None:
    args = step_parser(__doc__).parse_args(argv)
    params = load_params(args.params)
    task = dataset_params(params, args.dataset)["task"]
    layout = layout_for(params, args.dataset)
    level = params["report"]["ci_level"]
    methods = params["train_student"]["methods"]
    seeds = student_seeds(params)
    n_folds = job_matrix.n_folds(params, args.dataset)  # the folds the DAG ran
    per_run = collect(layout, methods, n_folds, TASK_METRICS[task], seeds)
    per_fold = fold_means(per_run)
    table = build_table(per_fold, args.dataset, level)
    teachers = teacher_table(layout, n_folds)
    index = pd.read_parquet(layout.index)
    shared_test = folds_share_test_set(index)
    data = report_data.build(layout, index)
    ds = dataset_params(params, args.dataset)
    units = unit_scores(layout, index, Task(task, ds.get("classes") or []), methods, n_folds, seeds)
    paired = report_paired.build(units, len(seeds), level)
    markdown = to_markdown(table, level, per_fold, teachers, shared_test)
    markdown += report_paired.to_markdown(paired)
    markdown += report_data.to_markdown(data)
    from pipeline_steps.teacher_shares import teacher_share_markdown

    markdown += teacher_share_markdown(layout, methods, n_folds, seeds)
    with atomic_path(layout.report_csv) as tmp:
        table.to_csv(tmp, index=False)
    report_paired.write_csvs(layout, paired)
    write_text(layout.report_md, markdown)
    with atomic_path(layout.figures_dir, is_dir=True) as tmp_dir:
        figures = make_figures(layout, per_fold, methods, n_folds, tmp_dir, seeds, paired)
    page = to_html(
        args.dataset,
        table,
        per_fold,
        level,
        figures,
        teachers,
        shared_test,
        report_data.to_html(data),
        report_paired.to_html(paired),
    )
    write_text(layout.report_html, page)
    _log_to_parent(params, args.dataset, layout, table, report_paired.mlflow_metrics(paired))
    print(markdown)
    print(f"[report] {layout.report_csv}, {layout.report_md}, {layout.report_html}")


def _log_to_parent(
    params: dict, dataset: str, layout: Layout, table: pd.DataFrame, paired: dict[str, float]
) -> None:
    from pipeline_steps.tracking import StageRun, client, close_parent_run, parent_run_id

    run = StageRun(client(), parent_run_id(params, dataset, layout))
    means = {
        f"{r['method']}.{m}_mean": r[f"{m}_mean"]
        for r in table.to_dict("records")
        for m in metrics_in(table)
    }
    run.log_metrics({k: v for k, v in means.items() if math.isfinite(v)} | paired)
    paths = (layout.report_csv, layout.paired_csv, layout.paired_units_csv)
    for path in (*paths, layout.report_md, layout.report_html):
        run.log_artifact(path)
    for path in sorted(layout.figures_dir.glob("*.png")):
        run.log_artifact(path, "figures")
    close_parent_run(layout, "FINISHED")  # the dataset's last stage (DVC has no onsuccess)


if __name__ == "__main__":
    main()
