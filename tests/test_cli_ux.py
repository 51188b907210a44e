"""A newcomer's view of the CLI: full-width piped output, help text that keeps its brackets,
one flag vocabulary across commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from llmplan.cli.app import app


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console script, stdout a pipe (not a terminal), COLUMNS unset unless given."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
    )


def _cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """The same command in-process (CliRunner: stdout and stderr are not terminals), cheaper than
    a subprocess; COLUMNS unset unless given."""
    from types import SimpleNamespace

    res = CliRunner().invoke(app, list(args), env={"COLUMNS": None, "LINES": None, **(env or {})})
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_piped_tables_are_not_cut_to_80_columns() -> None:
    out = _run("plan", "--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", "HE")
    assert out.returncode == 0, out.stderr
    header = next(line for line in out.stdout.splitlines() if "stage" in line and "GPUs" in line)
    for col in ("weights GiB", "prefill ms", "decode ms", "next link"):
        assert col in header, header  # not "weig…"
    assert "…" not in out.stdout
    # The vllm line is one line, not wrapped at 80.
    assert any(line.startswith("vllm: CUDA_VISIBLE_DEVICES=0 vllm serve") and "--dtype" in line
               for line in out.stdout.splitlines())  # fmt: skip


def test_explicit_columns_still_wins() -> None:
    out = _cli("plan", "--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", "HE",
               env={"COLUMNS": "60"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    table = [line for line in out.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 60


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    for name, cmd in group.commands.items():
        found.append((f"{prefix}{name}", cmd))
        if hasattr(cmd, "commands"):
            found += _commands(cmd, f"{prefix}{name} ")
    return found


def _all_commands() -> list[tuple[str, Any]]:
    """Every command and sub-command (typer's click objects; typer may vendor its own click)."""
    return _commands(typer.main.get_command(app))


def test_help_texts_keep_their_brackets() -> None:
    """Help is rich markup: `llmplan[vllm]` must be written `llmplan\\[vllm]` or it prints `llmplan`."""
    offenders = []
    for name, cmd in _all_commands():
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        for text in texts:
            for m in re.finditer(r"(?<![\\\s\[(])\[[A-Za-z0-9_,.-]+\]", text):
                offenders.append(f"{name}: ...{text[max(0, m.start() - 20) : m.end()]}")
    assert not offenders, offenders
    assert len(_all_commands()) >= 15  # the walk saw the sub-commands too


def test_serve_help_shows_the_vllm_extra() -> None:
    res = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "250"})
    assert res.exit_code == 0
    assert "pip install 'llmplan[vllm]'" in res.output


def _caps(*args: str) -> tuple[dict[str, float], str]:
    """GPU -> power limit from `topology --json` with these --power-cap args, and stderr."""
    import json

    out = _cli("topology", "--source", "preset:4x-rtx3090", *args, "--json")
    assert out.returncode == 0, out.stderr
    gpus = json.loads(out.stdout)["gpus"]
    return {g["id"]: g["power_limit_w"] for g in gpus}, out.stderr


def test_power_cap_has_one_syntax_in_topology_and_plan() -> None:
    new, err = _caps("--power-cap", "0=100,1=120")
    assert new["GPU0"] == 100 and new["GPU1"] == 120 and not err
    rep, _ = _caps("--power-cap", "GPU0=100W", "--power-cap", "1=120")
    assert rep == new
    # The old plan spelling still works, with one deprecation line naming the new one.
    old, err = _caps("--power-cap", "0:100,1:120")
    assert old == new
    assert "deprecated: --power-cap 0:100 is the old spelling; write --power-cap 0=100" in err
    # plan takes the same syntax (it used to refuse 0=100).
    plan_args = ("plan", "--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", "HE")
    capped = _cli(*plan_args, "--power-cap", "0=100")
    assert capped.returncode == 0, capped.stderr
    assert "│     0 │ GPU1 │" in capped.stdout  # GPU0 capped to 100 W: the next fastest takes the model
    old_plan = _cli(*plan_args, "--power-cap", "0:100")
    assert old_plan.stdout == capped.stdout and "deprecated:" in old_plan.stderr


def test_bad_power_cap_is_one_line_exit_2() -> None:
    from llmplan.cli._flags import parse_power_caps
    from llmplan.errors import LlmplanError

    for bad in ("x=100", "0=-5", "0=", "=100"):
        try:
            parse_power_caps([bad])
        except LlmplanError as exc:
            assert "--power-cap" in str(exc) and "e.g. --power-cap 0=250" in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
    out = _run("plan", "--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--power-cap", "0~100")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "--power-cap '0~100'" in out.stderr and "e.g. --power-cap 0=250" in out.stderr


def test_time_scale_is_the_old_spelling_of_rate_scale(tmp_path) -> None:
    """`--time-scale 2` (live mode's old flag) and `--rate-scale 2` are one knob with one sense."""
    import json

    args = ("bench", "--trace", "synthetic:rate=4,n=30", "--policy", "fcfs", "--no-plots", "--json")
    new = _cli(*args, "--rate-scale", "2", "--out", str(tmp_path / "new"))
    old = _cli(*args, "--time-scale", "2", "--out", str(tmp_path / "old"))
    assert new.returncode == old.returncode == 0, old.stderr
    assert "deprecated: --time-scale 2 is the old spelling; write --rate-scale 2" in old.stderr
    assert "deprecated" not in new.stderr
    wl_new, wl_old = json.loads(new.stdout)["workload"], json.loads(old.stdout)["workload"]
    assert wl_old["offered_rate_rps"] == wl_new["offered_rate_rps"]
    assert wl_old["meta"]["rate_scale"] == 2.0
    assert "--time-scale" not in _cli("bench", "--help", env={"COLUMNS": "200"}).stdout


def _bench_with_tty_stderr(tmp_path, *extra: str) -> tuple[int, str, str]:
    """Run a short bench with stderr on a pseudo-terminal; return (rc, stdout, what the terminal got)."""
    import pty

    master, slave = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "LLMPLAN_PROGRESS")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", *extra[:1], "bench", "--trace", "synthetic:rate=4,n=30",
         "--policy", "fcfs", "--no-plots", "--out", str(tmp_path), *extra[1:]],
        stdout=subprocess.PIPE, stderr=slave, text=True, env={**base, "TERM": "xterm"},
    )  # fmt: skip
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    stdout = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait(timeout=120)
    os.close(master)
    return rc, stdout, b"".join(chunks).decode(errors="replace")


@pytest.mark.slow  # two bench subprocesses on a pseudo-terminal
def test_progress_goes_to_a_terminal_stderr_with_an_eta(tmp_path) -> None:
    rc, stdout, tty = _bench_with_tty_stderr(tmp_path)
    assert rc == 0
    assert "fcfs" in tty and "ETA" in tty and "requests" in tty  # the bar, on stderr
    assert "ETA" not in stdout and "0:00:0" not in stdout  # the table, on stdout, without the bar
    rc, _, tty = _bench_with_tty_stderr(tmp_path, "--quiet")
    assert rc == 0 and "ETA" not in tty


@pytest.mark.slow
def test_no_progress_when_stderr_is_not_a_terminal(tmp_path) -> None:
    out = _run("bench", "--trace", "synthetic:rate=4,n=30", "--policy", "fcfs", "--no-plots",
               "--out", str(tmp_path))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no bar, no final frame of one, in logs and pipes


def test_plan_short_t_is_deprecated_because_bench_t_is_the_trace() -> None:
    args = ("plan", "--model", "chatglm2-6b", "--mode", "HE")
    new = _cli(*args, "--topology", "preset:4x-rtx3090")
    old = _cli(*args, "-t", "preset:4x-rtx3090")
    assert new.returncode == old.returncode == 0
    assert old.stdout == new.stdout
    want = "deprecated: -t preset:4x-rtx3090 is the old spelling; write --topology preset:4x-rtx3090"
    assert want in old.stderr
    assert "deprecated" not in new.stderr
