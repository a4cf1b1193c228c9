"""Quality control of the input data: the ``on_bad_sample`` policy and ``qc_report.json``.

Policy (``index_dataset.on_bad_sample``, read by every data and feature step):

* ``error`` (default): the first bad sample stops the step with an error naming the file and
  the problem; nothing is written under the output name (outputs are atomic).
* ``skip``: the bad sample is left out and recorded with its file and the reason.

Where skipped samples are decided. The training steps read every ``sample_id`` of
``index.parquet`` from every feature shard, so a sample must never be in the index and missing
from a shard. Therefore ``index_dataset`` validates every sample up front (files present,
biosignal CSV readable with the expected columns, sample rate and length, no NaN, no flat line
in the configured channels; video opens, reports a frame rate and has enough frames for
``crop_faces.window_s``) and, in skip mode, drops the bad ones from the index. A feature step
that still meets a bad sample (e.g. a video whose container claims frames that cannot be
decoded) records it and leaves it out of its shard; :func:`usable_ids` then gives the
intersection of the index with every shard and logs the ids it drops, for the steps that read
several modalities.

Report. Each step writes its own part ``results/<dataset>/qc/<step>.json`` (atomically; a
scattered step writes ``<step>-<part>.json``) and then rebuilds the merged view
``results/<dataset>/qc_report.json`` from all parts under a file lock::

    {"dataset": "<name>", "policy": ["skip"], "n_skipped": 2, "n_warnings": 1,
     "skipped":  [{"step": "index_dataset", "sample_id": "...", "file": "...", "reason": "..."}],
     "warnings": [{"step": "crop_faces-0", "sample_id": "...", "file": "...", "reason": "..."}],
     "steps": {"index_dataset": {"n_skipped": 2, "n_warnings": 0}, ...}}

Warnings are not skips: the sample stays. A clip whose share of frames with a detected face
is at least ``crop_faces.min_face_ratio`` but where some detector calls found none is kept
(boxes interpolated, or the centre crop with ``min_face_ratio: 0``, see
:mod:`pipeline_steps.face_detector`); below the threshold it is skipped (reason
``face found in x% of sampled frames``) whatever the policy: a documented decision, not an
error. A malformed or out-of-range Aff-Wild2 annotation line makes its frame unlabelled (like
-5) and is a warning naming the file and line in skip mode; in error mode it stops the step.

Samples skipped after indexing (by a feature step) are left out of every fold by
:func:`pipeline_steps.fold_data.load_index`, which drops the ids :func:`skipped_ids` lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline_steps.atomic import write_json
from pipeline_steps.dataset_error import DatasetError
from pipeline_steps.layout import Layout

POLICIES = ("error", "skip")


class BadSampleError(ValueError):
    """One sample's input is unusable; the message names the file and the problem."""

    def __init__(self, file: str | Path, problem: str, sample_id: str | None = None) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = str(file)
        self.problem = problem
        self.sample_id = sample_id


def qc_dir(layout: Layout) -> Path:
    return layout.root / "qc"


@dataclass
class QcLog:
    """Skips and warnings of one step; ``bad`` applies the policy to one failure."""

    step: str
    policy: str = "error"
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"on_bad_sample must be one of {POLICIES}, got {self.policy!r}")

    def bad(self, sample_id: str, err: Exception, file: str | Path | None = None) -> None:
        """Raise ``err`` (policy error) or record the sample as skipped (policy skip)."""
        if self.policy == "error":
            err.per_sample = True  # the CLI line then names the key that skips instead
            raise err
        problem = getattr(err, "problem", None) or str(err)
        where = file if file is not None else getattr(err, "file", None) or getattr(err, "path", "")
        if not where and ": " in problem:  # messages read "<file>: <problem>"
            where, problem = problem.split(": ", 1)
        elif problem.startswith(f"{where}: "):
            problem = problem[len(f"{where}: ") :]
        self.skip(sample_id, where, problem)

    def bad_line(self, sample_id: str, file: str | Path, line: int, problem: str) -> None:
        """One unusable line of a labels file: raise (policy error) or warn that its frame is
        left unlabelled (policy skip)."""
        if self.policy == "error":
            err = DatasetError(f"{file}: line {line}: {problem}")
            err.per_sample = True
            raise err
        self.warn(sample_id, file, f"line {line}: {problem}; frame left unlabelled")

    def skip(self, sample_id: str, file: str | Path, reason: str) -> None:
        """Leave a sample out by a documented rule (not an error in either policy)."""
        self.skipped.append(
            {"step": self.step, "sample_id": str(sample_id), "file": str(file), "reason": reason}
        )
        print(f"[qc] {self.step}: skipped {sample_id}: {file}: {reason}", flush=True)

    def warn(self, sample_id: str, file: str | Path, reason: str) -> None:
        self.warnings.append(
            {"step": self.step, "sample_id": str(sample_id), "file": str(file), "reason": reason}
        )

    @property
    def skipped_ids(self) -> set[str]:
        return {e["sample_id"] for e in self.skipped}

    def write(self, layout: Layout) -> Path:
        """Write this step's part and refresh the merged ``qc_report.json``; return the part."""
        part = qc_dir(layout) / f"{self.step}.json"
        write_json(
            part,
            {
                "step": self.step,
                "policy": self.policy,
                "skipped": self.skipped,
                "warnings": self.warnings,
            },
        )
        merge_report(layout)
        return part


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def merge_report(layout: Layout) -> dict[str, Any]:
    """Rebuild ``qc_report.json`` from every part under ``qc/`` (atomic, under a lock)."""
    folder = qc_dir(layout)
    with _locked(folder / ".lock"):
        parts = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        report: dict[str, Any] = {
            "dataset": layout.dataset,
            "policy": sorted({p["policy"] for p in parts}),
            "skipped": [e for p in parts for e in p["skipped"]],
            "warnings": [e for p in parts for e in p["warnings"]],
            "steps": {
                p["step"]: {"n_skipped": len(p["skipped"]), "n_warnings": len(p["warnings"])}
                for p in parts
            },
        }
        report["n_skipped"] = len(report["skipped"])
        report["n_warnings"] = len(report["warnings"])
        write_json(layout.qc_report, report)
    return report


def read_report(layout: Layout) -> dict[str, Any]:
    """The merged report (empty when no step has written QC yet)."""
    if not layout.qc_report.exists():
        return {"dataset": layout.dataset, "skipped": [], "warnings": [], "steps": {}}
    return json.loads(layout.qc_report.read_text())


def skipped_ids(layout: Layout) -> set[str]:
    """Ids of every sample a step of the dataset skipped (per the merged report)."""
    return {e["sample_id"] for e in read_report(layout)["skipped"]}


def usable_ids(index_ids: list[str], shard_ids: dict[str, list[str]]) -> list[str]:
    """Index ids present in every modality's shard (index order); prints what is dropped."""
    keep = list(index_ids)
    for modality, ids in shard_ids.items():
        present = set(ids)
        dropped = [s for s in keep if s not in present]
        if dropped:
            print(
                f"[qc] {len(dropped)} sample(s) missing from the {modality} shard(s) "
                f"(skipped by a feature step), left out: {dropped[:5]}",
                flush=True,
            )
        keep = [s for s in keep if s in present]
    return keep
