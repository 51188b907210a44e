"""Progress for bench runs: one line per run (policy, sweep point, live replay), on stderr.

Built on :mod:`llmplan.progress`, so it is drawn only on a terminal and never with
``--quiet`` or ``--json``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from llmplan import progress
from llmplan.progress import OnProgress


@contextmanager
def bench_progress(console: Any = None) -> Iterator[OnProgress]:
    """``on_progress(label, done, total)`` for :func:`llmplan.bench.runner.run_bench`.

    ``console`` is accepted for callers of the old signature; the display always goes to stderr.
    """
    with ExitStack() as stack:
        tasks: dict[str, progress.Task] = {}

        def update(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = stack.enter_context(progress.task(f"{label:<18}", total, unit="requests"))
            tasks[label].update(completed=done, total=total)

        yield update
