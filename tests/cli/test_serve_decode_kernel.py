"""`LLMPLAN_DECODE_KERNEL` (the compiled CPU decode-attention kernel) and `--cpu-bind` are checked
before the engine is built: a bad choice stops `llmplan serve` with one line, before any request."""

from __future__ import annotations

from llmplan.runtime.engine import native

from .conftest import assert_clean_error, run_cli


def test_serve_refuses_a_bad_kernel_choice_in_one_line(monkeypatch):
    monkeypatch.setenv("LLMPLAN_DECODE_KERNEL", "fast")
    native.reset()
    try:
        line = assert_clean_error(run_cli(["serve", "--dummy-weights", "llama-tiny", "--port", "1"]))
    finally:
        native.reset()
    assert "LLMPLAN_DECODE_KERNEL='fast' is not a choice; use one of auto, torch, native" in line


def test_serve_refuses_cpus_it_may_not_use_and_a_bind_for_several_processes():
    line = assert_clean_error(
        run_cli(["serve", "--dummy-weights", "llama-tiny", "--cpu-bind", "100000", "--port", "1"])
    )
    assert "--cpu-bind 100000: CPUs must be distinct and among those this process may use" in line
    line = assert_clean_error(
        run_cli(
            ["serve", "--dummy-weights", "llama-tiny", "--cpu-bind", "0", "--instances", "2", "--port", "1"]
        )
    )
    assert "--cpu-bind pins one built-in engine's threads" in line
