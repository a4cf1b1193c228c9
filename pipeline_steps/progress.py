"""Progress bars for long steps that stay quiet in logs.

``progress(iterable, total=None, desc="")`` yields the items of ``iterable`` and draws a
one-line bar on stderr only when stderr is a terminal: Snakemake/DVC logs (``> {log} 2>&1``),
SLURM output files and CI get nothing. ``MTPKDOT_PROGRESS=1`` forces the bar on, ``=0`` off.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")


def enabled(stream: TextIO | None = None) -> bool:
    """Bars on a TTY only (``MTPKDOT_PROGRESS`` overrides); never under CI."""
    forced = os.environ.get("MTPKDOT_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if os.environ.get("CI"):
        return False
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    stream: TextIO | None = None,
    min_interval: float = 0.2,
) -> Iterator[T]:
    """Yield from ``iterable``, redrawing ``desc [#####.....] i/total elapsed`` at most every
    ``min_interval`` seconds, and a final line at the end."""
    stream = stream or sys.stderr
    if not enabled(stream):
        yield from iterable
        return
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    start = last = time.monotonic()
    done = 0

    def draw(final: bool = False) -> None:
        elapsed = time.monotonic() - start
        if total:
            filled = int(30 * done / total)
            bar = f"[{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        else:
            bar = f"{done}"
        stream.write(f"\r{desc} {bar} {elapsed:5.1f}s" + ("\n" if final else ""))
        stream.flush()

    draw()
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= min_interval:
            last = now
            draw()
    draw(final=True)
