"""What a dataset's index is built from, declared per layout, for Snakemake and DVC alike.

Each loader declares its inputs (``index_inputs(root, ds)`` in :mod:`pipeline_steps.biovid`
and :mod:`pipeline_steps.affwild2`) as :class:`IndexInput` items: a file, or a folder with the
file suffixes that matter in it. An optional folder that does not exist is left out (not an
error); a missing required file (e.g. BioVid's samples file) raises ``DatasetError``.

- DVC (``dvc.yaml``, written by :mod:`pipeline_steps.job_matrix`) depends on the paths
  themselves (:func:`dvc_paths`): it hashes a folder's content, so any changed, added or
  removed file re-triggers ``index_dataset``.
- Snakemake compares modification times, and a folder's own time changes only when an entry is
  added or removed, so :func:`snakemake_inputs` lists the folders and every file with a
  declared suffix (a changed file is then newer than the index; a new or removed file changes
  the input list). ``depth`` bounds the walk (Aff-Wild2's ``cropped_aligned`` holds millions
  of jpgs: only its per-video folders are watched).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IndexInput:
    """A file, or a folder whose files ending in ``suffixes`` (walked ``depth`` levels deep,
    None: all) the index reads."""

    path: Path
    suffixes: tuple[str, ...] = ()
    depth: int | None = None


def index_inputs(ds: dict[str, Any]) -> list[IndexInput]:
    """The existing inputs of ``ds`` (a ``datasets.<name>`` section) by its layout."""
    from pipeline_steps import affwild2, biovid

    loaders = {"biovid": biovid.index_inputs, "affwild2": affwild2.index_inputs}
    if ds["layout"] not in loaders:
        raise ValueError(f"layout {ds['layout']!r}: no loader ({', '.join(loaders)})")
    return [item for item in loaders[ds["layout"]](Path(ds["root"]), ds) if item.path.exists()]


def dvc_paths(ds: dict[str, Any]) -> list[str]:
    """The dataset's inputs as DVC dependencies (files and whole folders)."""
    return [str(item.path) for item in index_inputs(ds)]


def _walk(item: IndexInput) -> list[str]:
    found = [str(item.path)]
    if not item.path.is_dir():
        return found
    base_depth = len(item.path.parts)
    for folder, subfolders, files in os.walk(item.path):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found += [os.path.join(folder, d) for d in subfolders]
        if item.suffixes:
            found += [
                os.path.join(folder, f)
                for f in sorted(files)
                if not f.startswith(".") and f.lower().endswith(item.suffixes)
            ]
        if item.depth is not None and len(Path(folder).parts) - base_depth + 1 >= item.depth:
            subfolders[:] = []  # listed, not entered
    return found


def snakemake_inputs(ds: dict[str, Any]) -> list[str]:
    """The dataset's inputs as Snakemake input files: folders and the files that matter."""
    return sorted({path for item in index_inputs(ds) for path in _walk(item)})
