"""Shared CLI helpers: one-line errors, JSON output, lazy imports.

Library code raises :class:`llmplan.errors.LlmplanError` with a message that names the
problem and the fix; the CLI turns it into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console, ConsoleDimensions
from rich.markup import escape

# Width for output that is not a terminal (a pipe, a file, the docs): wide enough for every
# table llmplan prints, so nothing is cut to "weig..." and nobody needs COLUMNS=... .
PIPE_WIDTH = 200


class WideConsole(Console):
    """A rich Console that is full width when its stream is not a terminal.

    Rich falls back to 80 columns (or the width of whichever std stream *is* a terminal)
    when output is redirected; tables then truncate their headers. Here a non-terminal
    stream gets ``PIPE_WIDTH`` columns unless ``COLUMNS`` is set explicitly.
    """

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def make_console(*, stderr: bool = False, **kwargs: Any) -> Console:
    """The one Console factory of the CLI (stdout or stderr), full width when piped."""
    return WideConsole(stderr=stderr, **kwargs)


console = make_console()
err_console = make_console(stderr=True)
MAX_ERROR_CHARS = 600


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit."""
    # One line whatever the message holds (a library's multi-line text, a file's content); very
    # long ones are cut in the middle so both the problem (start) and the fix (end) stay.
    line = " ".join(str(message).split())
    if len(line) > MAX_ERROR_CHARS:
        half = MAX_ERROR_CHARS // 2
        line = f"{line[:half]} ... {line[-half:]}"
    # The message is plain text: brackets in it ("llmplan[vllm]") are not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
