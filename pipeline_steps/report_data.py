"""The report's data section: what the data steps kept, skipped and warned about (QC).

Built from ``index.parquet`` and ``qc_report.json`` (:mod:`pipeline_steps.qc`): samples kept per
class (BioVid) or per video (Aff-Wild2, with its set), skipped samples counted per step and
reason, warnings counted per step, the first :data:`LISTED` entries of each with file and
reason, and the path of ``qc_report.json`` that holds them all. A kept sample is in the index
and was not skipped by a feature step (the samples every fold uses).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pandas as pd

from pipeline_steps.layout import Layout
from pipeline_steps.qc import read_report

LISTED = 20


@dataclass
class DataSection:
    """Tables of the data section (each a frame with string or integer cells)."""

    kept: pd.DataFrame
    skipped: pd.DataFrame
    warnings: pd.DataFrame
    listed_skips: pd.DataFrame
    listed_warnings: pd.DataFrame
    n_index: int
    n_kept: int
    qc_path: str


def _reason_kind(reason: str) -> str:
    """A reason with its numbers and quoted names blanked, so alike reasons count together."""
    return re.sub(r"'[^']*'|\d+(\.\d+)?", "#", reason)


def _entries(entries: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(entries, columns=["step", "sample_id", "file", "reason"])


def _counts(entries: pd.DataFrame, by_reason: bool) -> pd.DataFrame:
    """Entries per step (a scattered step's parts together) and, if asked, reason kind."""
    keys = ["step", "reason"] if by_reason else ["step"]
    frame = entries.assign(
        step=entries["step"].str.replace(r"-\d+$", "", regex=True),
        reason=entries["reason"].map(_reason_kind),
    )
    return frame.groupby(keys, sort=True).size().rename("samples").reset_index()


def kept_table(index: pd.DataFrame, dropped: set[str]) -> pd.DataFrame:
    """Samples per class (``class_name`` in the index) or per video (``video``, ``set``)."""
    frame = index.assign(kept=~index["sample_id"].isin(dropped))
    keys = ["class_name"] if "class_name" in index.columns else ["set", "video"]
    table = frame.groupby(keys, sort=True)["kept"].agg(indexed="size", kept="sum").reset_index()
    return table.astype({"indexed": int, "kept": int})


def build(layout: Layout, index: pd.DataFrame) -> DataSection:
    report = read_report(layout)
    skipped, warnings = _entries(report["skipped"]), _entries(report["warnings"])
    dropped = set(skipped["sample_id"])
    kept = kept_table(index, dropped)
    return DataSection(
        kept=kept,
        skipped=_counts(skipped, by_reason=True),
        warnings=_counts(warnings, by_reason=False),
        listed_skips=skipped.head(LISTED),
        listed_warnings=warnings.head(LISTED),
        n_index=len(index),
        n_kept=int(kept["kept"].sum()),
        qc_path=str(layout.qc_report),
    )


def _md_table(frame: pd.DataFrame) -> list[str]:
    if frame.empty:
        return ["(none)"]
    cells = frame.astype(str).map(lambda v: v.replace("|", "\\|"))
    lines = ["| " + " | ".join(frame.columns) + " |", "|---" * len(frame.columns) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]


def _summary(section: DataSection) -> str:
    n_skipped, n_warnings = (int(t["samples"].sum()) for t in (section.skipped, section.warnings))
    return (
        f"{section.n_kept} of {section.n_index} indexed samples kept; {n_skipped} samples "
        f"skipped (by index_dataset before indexing, or by a feature step), {n_warnings} "
        f"warnings. All of them, with file and reason: {section.qc_path}."
    )


def _parts(section: DataSection) -> list[tuple[str, pd.DataFrame]]:
    return [
        ("Samples kept", section.kept),
        ("Skipped, per step and reason", section.skipped),
        ("Warnings, per step", section.warnings),
        (f"Skipped samples (first {LISTED})", section.listed_skips),
        (f"Warnings (first {LISTED})", section.listed_warnings),
    ]


def to_markdown(section: DataSection) -> str:
    lines = ["", "## Data and quality control", "", _summary(section)]
    for title, frame in _parts(section):
        lines += ["", f"{title}:", "", *_md_table(frame)]
    return "\n".join(lines) + "\n"


def to_html(section: DataSection) -> str:
    parts = ["<h2>Data and quality control</h2>", f"<p>{html.escape(_summary(section))}</p>"]
    for title, frame in _parts(section):
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if frame.empty:
            parts.append("<p>(none)</p>")
        else:
            parts.append(frame.to_html(index=False, escape=True, border=0))
    return "".join(parts)
