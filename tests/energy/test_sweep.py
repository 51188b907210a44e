"""calibrate --clock-sweep (refusals through the real CLI; the sweep loop against a recorded-counter
stand-in for NVML) and calibrate --power-samples (the fit from a samples file through the real CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.energy.measure import GpuReading, NvmlReader, load_power_samples
from llmplan.energy.sweep import run_sweep, write_samples
from llmplan.errors import LlmplanError

runner = CliRunner()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmplan.cli.app", "calibrate", *args],
                          capture_output=True, text=True, timeout=120)


def _one_line(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_clock_sweep_on_cpu_is_refused_before_timing(tmp_path: Path) -> None:
    out = tmp_path / "ops"
    proc = _cli("--ops", "--dummy-weights", "llama-tiny", "--device", "cpu", "--out", str(out),
                "--clock-sweep", "900,1200")
    _one_line(proc, "--clock-sweep needs --device cuda")
    assert not out.exists()  # refused before anything was timed or written


@pytest.mark.slow
def test_clock_sweep_without_nvml_or_bad_clocks_is_one_line(tmp_path: Path) -> None:
    if NvmlReader().available:
        pytest.skip("NVML is present; this test is about a machine without it")
    out = tmp_path / "ops"
    _one_line(_cli("--ops", "--dummy-weights", "llama-tiny", "--device", "cuda", "--out", str(out),
                   "--clock-sweep", "900,1200"), "cannot lock clocks: NVML unavailable")
    _one_line(_cli("--ops", "--dummy-weights", "llama-tiny", "--device", "cuda", "--out", str(out),
                   "--clock-sweep", "900"), "two or more distinct SM clocks")
    assert not out.exists()


class _Counter:
    """Stands in for NVML's energy counter: the GPU draws ``watts(mhz)`` while work runs."""

    def __init__(self, refuse_at: float | None = None) -> None:
        self.handles = [object()]
        self.mhz: float | None = None
        self.energy_mj = 10_000_000
        self.calls: list[float | None] = []
        self.refuse_at = refuse_at

    available = True
    problem = ""

    def set_locked_clocks(self, mhz: float | None, index: int = 0) -> tuple[bool, str]:
        self.calls.append(mhz)
        if mhz is not None and mhz == self.refuse_at:
            return False, "GPU0: locking the SM clock was refused (Insufficient Permissions)"
        self.mhz = mhz
        return True, "ok"

    def read(self) -> list[GpuReading]:
        return [GpuReading(0, self.energy_mj, 0.0, self.mhz or 1410, 0.9)]

    def work(self, seconds: float) -> None:
        r = (self.mhz or 1410) / 1410
        self.energy_mj += int((100 + 300 * 0.9 * r**2.5) * seconds * 1000)


def test_sweep_writes_samples_that_fit_power_reads_and_unlocks(tmp_path: Path) -> None:
    import time

    gpu = _Counter()

    def work() -> None:
        t0 = time.monotonic()
        time.sleep(0.02)
        gpu.work(time.monotonic() - t0)

    samples = run_sweep(gpu, 0, [705, 1005, 1410], work)
    assert gpu.calls == [705, 1005, 1410, None]  # unlocked at the end
    assert [s["mhz"] for s in samples] == [705, 1005, 1410]
    # joules / seconds; the stand-in's clock of seconds and the sweep's differ by the call overhead
    assert samples[0]["power_w"] < samples[1]["power_w"] < samples[2]["power_w"] <= 370.0 * 1.01
    path = tmp_path / "power_samples.jsonl"
    write_samples(path, samples)
    assert [s.mhz for s in load_power_samples(path)] == [705, 1005, 1410]


def test_sweep_refused_lock_raises_one_line_and_unlocks() -> None:
    gpu = _Counter(refuse_at=1005)
    with pytest.raises(LlmplanError, match="refused.*Insufficient Permissions"):
        run_sweep(gpu, 0, [705, 1005, 1410], lambda: gpu.work(0.1))
    assert gpu.calls == [705, 1005, None]


def test_fit_from_recorded_samples_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    rows = [{"mhz": f, "activity": u, "power_w": 120 + 300 * u * (f / 1410) ** 2.2}
            for f in (705, 1005, 1200, 1410) for u in (0.3, 0.6, 1.0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = runner.invoke(app, ["calibrate", "--power-samples", str(path), "--gpu", "A100-SXM-80GB", "--json"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    r = json.loads(res.output)
    assert r["samples"] == 12 and r["clocks_mhz"] == [705, 1005, 1200, 1410]
    assert r["fitted"]["static_w"] == pytest.approx(120, abs=1)
    assert r["fitted"]["dyn_w"] == pytest.approx(300, abs=2)
    assert r["fitted"]["alpha"] == pytest.approx(2.2, abs=0.05)
    assert r["rms_w"] < 1.0
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(rows[0]) + "\n")
    _one_line(_cli("--power-samples", str(one), "--gpu", "A100"), "two or more SM clocks")
