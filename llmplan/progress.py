"""Progress bars and spinners for work that can take more than a couple of seconds.

Library code wraps a long step in :func:`task`; a person at a terminal sees a bar (or a spinner
when the total is unknown) with elapsed time and an ETA on **stderr**, so stdout (tables,
``--json``) stays clean. Nothing is drawn when stderr is not a terminal (pipes, logs, CI, tests),
after :func:`set_quiet` (the CLI's ``--quiet`` and ``--json``), or with ``LLMPLAN_PROGRESS=0``.

Nested tasks share one display (rich allows one live display at a time): an inner task adds a
line under the outer one and removes it when done.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# (label, done, total): one progress stream per run label (bench runs, their live progress bars).
OnProgress = Callable[[str, int, int], None]

_quiet = False
_display: Any = None  # the rich Progress while some task is open
_depth = 0


def set_quiet(quiet: bool = True) -> None:
    """Turn every progress display off (``--quiet``, ``--json``) or back on."""
    global _quiet
    _quiet = quiet


def enabled() -> bool:
    """Whether a display would be drawn now: stderr is a terminal and nobody asked for quiet."""
    if _quiet or os.environ.get("LLMPLAN_PROGRESS", "").strip() == "0":
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Task:
    """A handle on one line of the display; every method is a no-op when nothing is drawn."""

    def __init__(self, progress: Any = None, task_id: Any = None) -> None:
        self._progress = progress
        self._id = task_id
        self.completed = 0.0

    def advance(self, n: float = 1) -> None:
        self.completed += n
        if self._progress is not None:
            self._progress.update(self._id, advance=n)

    def update(
        self, completed: float | None = None, total: float | None = None, description: str | None = None
    ) -> None:
        if completed is not None:
            self.completed = completed
        if self._progress is not None:
            kw: dict[str, Any] = {}
            if completed is not None:
                kw["completed"] = completed
            if total is not None:
                kw["total"] = total
            if description is not None:
                kw["description"] = description
            self._progress.update(self._id, **kw)


def _new_display() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


@contextmanager
def task(description: str, total: float | None = None, *, unit: str = "") -> Iterator[Task]:
    """A progress line for the duration of the ``with`` block.

    ``total=None`` draws a spinner (no ETA can be known); otherwise call ``advance`` as work
    completes and the line shows done/total, elapsed time and the estimated time left.
    """
    global _display, _depth
    if not enabled():
        yield Task()
        return
    outer = _display is None
    if outer:
        _display = _new_display()
        _display.start()
    _depth += 1
    tid = _display.add_task(description, total=total, unit=unit)
    try:
        yield Task(_display, tid)
    finally:
        _depth -= 1
        _display.remove_task(tid)
        if outer:
            _display.stop()
            _display = None
