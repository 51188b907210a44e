"""Shared CLI helpers: one-line errors, JSON output, lazy imports.

Library code raises :class:`llmplan.errors.LlmplanError` with a message that names the
problem and the fix; the CLI turns it into one red line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error to stderr and exit."""
    # The message is plain text: brackets in it ("llmplan[vllm]") are not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def not_built(command: str, issue: int) -> NoReturn:
    fail(f"`llmplan {command}` is not built yet (tracked in issue {issue}).")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
