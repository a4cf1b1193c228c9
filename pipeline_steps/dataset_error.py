"""The one error type for data that does not match its layout, and how a step CLI reports it.

Every loader (BioVid, Aff-Wild2) and every data or feature step raises :class:`DatasetError`
for an expected problem of the data on disk (a missing file, a malformed line, a video that
cannot be decoded). Its message names the file and the problem. A step's ``__main__`` runs
through :func:`run_step`: such an error ends the process with exit code 1 and one line on
stderr (no traceback); any other exception is a bug and keeps its traceback.

An error about one sample (raised by :meth:`pipeline_steps.qc.QcLog.bad` in error mode) is
marked ``per_sample``; its line also names the key that leaves such samples out instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

SKIP_KEY = "index_dataset.on_bad_sample"
SKIP_HINT = f"set {SKIP_KEY}: skip to leave such samples out (listed in qc_report.json)"


class DatasetError(ValueError):
    """The dataset on disk does not match the expected layout (message: file and problem)."""

    per_sample: bool = False


def error_line(step: str, err: DatasetError) -> str:
    """The one line a step prints for ``err``."""
    hint = f" ({SKIP_HINT})" if getattr(err, "per_sample", False) else ""
    return f"{step}: error: {err}{hint}"


def run_step(step: str, main: Callable[[], Any]) -> None:
    """Run a step's ``main``; a :class:`DatasetError` exits 1 with one line on stderr."""
    try:
        code = main()
    except DatasetError as err:
        print(error_line(step, err), file=sys.stderr, flush=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
