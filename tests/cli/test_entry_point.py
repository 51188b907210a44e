"""The console script's last line of defence: no traceback reaches a user unless asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

import llmplan.topology

from .conftest import assert_clean_error, run_cli


def _boom(*_a, **_k):
    raise RuntimeError("injected fault\nsecond line")


def test_unexpected_exception_is_one_line_pointing_at_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llmplan.topology, "load_topology", _boom)
    res = run_cli(["topology", "--source", "preset:2x-rtx4090"])
    assert res.code == 2
    assert res.error_lines == [
        "error: unexpected RuntimeError: injected fault second line -- this is a bug in llmplan; "
        "run with --debug (or LLMPLAN_DEBUG=1) for the traceback"
    ]


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    monkeypatch.setattr(llmplan.topology, "load_topology", _boom)
    argv = ["topology", "--source", "preset:2x-rtx4090"]
    monkeypatch.setenv("LLMPLAN_DEBUG", "0")  # restored afterwards, whatever --debug sets
    if how == "flag":
        argv = ["--debug", *argv]
    else:
        monkeypatch.setenv("LLMPLAN_DEBUG", "1")
    from llmplan.cli.app import main

    with pytest.raises(RuntimeError, match="injected fault"):
        main(argv)


def test_usage_error_is_one_line() -> None:
    res = run_cli(["plan", "--a1", "half"])
    line = assert_clean_error(res, "--a1")
    assert "llmplan plan --help" in line


def test_no_arguments_prints_the_help() -> None:
    res = run_cli([])
    shown = res.stdout + res.stderr
    assert res.code == 2 and "Usage" in shown and "topology" in shown


def test_console_script_error_has_no_traceback() -> None:
    """The installed entry point (a real process): a bad topology file, one line, exit 2."""
    out = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "topology", "--source", "file:/nonexistent/t.json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "does not exist" in lines[0] and "Traceback" not in out.stderr
