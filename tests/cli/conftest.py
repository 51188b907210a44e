"""Run the real console script (``llmplan.cli.app.main``) in-process and capture what a user sees."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass

import pytest

from llmplan.cli.app import DEBUG_ENV, main


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.stderr.splitlines() if ln.strip()]


def run_cli(argv: list[str]) -> CliResult:
    """``llmplan ARGV`` exactly as the console script runs it (the top-level handler included)."""
    out, err = io.StringIO(), io.StringIO()
    old = os.environ.pop(DEBUG_ENV, None)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.pop(DEBUG_ENV, None)
        if old is not None:
            os.environ[DEBUG_ENV] = old
    return CliResult(code, out.getvalue(), err.getvalue())


def assert_clean_error(res: CliResult, needle: str | None = None) -> str:
    """Exit 2, exactly one line on stderr, no traceback, not the catch-all for bugs."""
    assert res.code == 2, f"exit {res.code}, stderr={res.stderr!r}, stdout={res.stdout[-500:]!r}"
    lines = res.error_lines
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {res.stderr!r}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in res.stderr and "unexpected" not in line, line
    if needle is not None:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


@pytest.fixture()
def cli():
    return run_cli
