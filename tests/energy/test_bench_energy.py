"""Joules in `llmplan bench` reports, through the real CLI and real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from llmplan.cli.app import app

runner = CliRunner()
ARGS = ["bench", "--jobs", "1", "--trace", "synthetic:n=120,rate=4", "--model", "llama-3.1-8b",
        "--slo", "fixed:ttft=2,tpot=0.1,e2e=1000", "--policy", "fcfs", "--disaggregation", "1:1",
        "--instances", "2", "--no-plots"]


def _energy(tmp_path: Path, mode: str) -> tuple[dict, str]:
    out = tmp_path / mode
    res = runner.invoke(app, [*ARGS, "--energy", mode, "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    return data["runs"]["fcfs"]["summary"].get("energy"), res.output


def test_report_has_joules_and_greenserve_uses_fewer(tmp_path: Path) -> None:
    base, text = _energy(tmp_path, "max")
    green, _ = _energy(tmp_path, "greenserve")
    off, _ = _energy(tmp_path, "off")
    assert off is None
    assert "energy / request (J, modelled)" in text
    assert base["modelled"] is True and base["mean_clock_mhz"] == 1410
    assert base["energy_j"] == base["busy_energy_j"] + base["idle_energy_j"]
    assert green["energy_j"] < base["energy_j"]
    assert green["mean_clock_mhz"] < 1410


def test_bad_energy_mode_is_one_line_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "bench", "--energy", "turbo", "-n", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "choose max, greenserve or off" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
