"""Epoch-level resume state of a training stage (an interrupted job continues, or restarts).

After every epoch ``trainer.fit`` writes, atomically, everything the rest of the run depends
on: epoch, model and optimiser states, the data-order generator and the global RNG states
(python, numpy, torch, CUDA), the best state so far with its epoch and validation row, the
early-stopping counter, the history, and the stage's own ``extra`` state (e.g. figure
snapshots). A rerun of the same stage with the same **key** continues after the last finished
epoch and, on CPU, ends with exactly the metrics of an uninterrupted run. The key digests the
stage's name, params and the size and modification time of its input files, so a rerun after
any of these changed starts from scratch. The file is removed when training finishes.

Location: ``results/<dataset>/fold<k>/resume/<stage>-<name>.pt`` (not a pipeline output, so
Snakemake's cleanup of a failed job's outputs keeps it; delete the folder to force a restart).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline_steps.atomic import atomic_path


def resume_key(stage: str, params: dict, inputs: list[Path]) -> str:
    """Digest of the stage name, its params and the (size, mtime) of each input file."""
    stats = []
    for path in sorted(Path(p) for p in inputs):
        st = path.stat()
        stats.append([str(path), st.st_size, st.st_mtime_ns])
    text = json.dumps([stage, params, stats], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.copy()), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """random.setstate wants tuples where a checkpoint round trip may give lists."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(v) for v in value)
    return value


@dataclass
class Resume:
    """Where and under which key a stage keeps its per-epoch state."""

    path: Path
    key: str
    optimizer: torch.optim.Optimizer
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, epoch: int, model: torch.nn.Module, generator: torch.Generator, **loop) -> None:
        """Write the state after ``epoch`` (``loop``: best, stale, best_state, history ...)."""
        payload = {
            "key": self.key,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": generator.get_state(),
            "rng": _rng_state(),
            "extra": self.extra,
            "loop": loop,
        }
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def load(self, model: torch.nn.Module, generator: torch.Generator) -> dict | None:
        """Restore a matching state into model, optimiser, RNGs and ``extra``; return its loop
        fields with ``epoch``, or None (no file, or a different key: start from scratch)."""
        if not self.path.exists():
            return None
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state.get("key") != self.key:
            print(f"[resume] {self.path}: params or inputs changed, starting from scratch")
            return None
        model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        _set_rng_state(state["rng"])
        self.extra.clear()
        self.extra.update(state["extra"])
        print(f"[resume] {self.path}: continuing after epoch {state['epoch']}")
        return {"epoch": state["epoch"], **state["loop"]}

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
