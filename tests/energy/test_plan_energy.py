"""`llmplan plan --pd --objective energy` through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app

runner = CliRunner()
BASE = ["plan", "--model", "llama-3.1-8b", "--topology", "preset:dgx-a100", "--pd", "--max-gpus", "2",
        "--slo-ttft", "1", "--slo-tpot", "0.05", "--objective", "energy", "--json"]


@pytest.mark.slow
def test_energy_objective_picks_the_cheapest_clock_that_meets_the_target() -> None:
    res = runner.invoke(app, [*BASE, "--rate", "4"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    e = json.loads(res.output)["energy"]
    assert e["modelled"] is True and e["rate"] == 4
    rows = e["rows"]
    assert {r["clock"] for r in rows} >= {"max", "greenserve"}
    assert any(r["clock"].startswith("fixed:") for r in rows)
    meets = [r for r in rows if r["attainment"] >= 0.9]
    assert e["choice"]["energy_per_request_j"] == min(r["energy_per_request_j"] for r in meets)
    assert e["choice"]["energy_per_request_j"] < e["best_max_clock"]["energy_per_request_j"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmplan.cli.app", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_energy_objective_refusals_are_one_line_exit_2() -> None:
    p = _cli("plan", "--model", "llama-3.1-8b", "--topology", "preset:dgx-a100", "--objective", "energy")
    assert p.returncode == 2 and "add --pd" in p.stderr and "Traceback" not in p.stderr
    p = _cli(*BASE[:-3], "--objective", "joules")
    assert p.returncode == 2 and "choose goodput or energy" in p.stderr
    p = _cli(*BASE, "--rate", "200")  # two GPUs cannot serve 200 req/s at any clock
    assert p.returncode == 2 and "no candidate split meets" in p.stderr and "Traceback" not in p.stderr
