"""Energy reading on CPU: RAPL from a recorded powercap tree, NVML absent, recorded power samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmplan.energy.measure import EnergyMeter, NvmlReader, RaplReader, load_power_samples
from llmplan.energy.power import CLOCK_POWER, fit_power
from llmplan.errors import LlmplanError

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    root = tmp_path / "powercap"
    shutil.copytree(FIX / "powercap", root)
    return root


def _write(root: Path, zone: str, uj: int) -> None:
    (root / zone / "energy_uj").write_text(f"{uj}\n")


def test_rapl_reads_packages_and_survives_a_wrap(powercap: Path) -> None:
    r = RaplReader(powercap)
    assert [z.name for z in r.zones] == ["intel-rapl:0:package-0", "intel-rapl:1:package-1"]
    a = r.read_uj()
    _write(powercap, "intel-rapl:0", 1_000_000)  # wrapped past 262143328850
    _write(powercap, "intel-rapl:1", 31_000_000)
    j = r.joules_between(a, r.read_uj())
    assert j["intel-rapl:0:package-0"] == pytest.approx((262143328850 - 262143000000 + 1_000_000) / 1e6)
    assert j["intel-rapl:1:package-1"] == pytest.approx(30.0)


def test_meter_uses_rapl_then_says_modelled_only(powercap: Path, tmp_path: Path) -> None:
    m = EnergyMeter(rapl_root=powercap, use_nvml=False)
    assert m.source == "rapl"
    m.start()
    _write(powercap, "intel-rapl:1", 6_000_000)
    out = m.stop()
    assert out["joules"] == pytest.approx(5.0)
    none = EnergyMeter(rapl_root=tmp_path / "absent", use_nvml=False)
    assert none.source == "modelled"
    assert "modelled only" in none.note and "does not exist" in none.note
    none.start()
    assert none.stop()["joules"] is None


def test_nvml_without_a_gpu_refuses_clock_locking_plainly() -> None:
    nv = NvmlReader()
    if nv.available:
        pytest.skip("a GPU is present; this test is about a machine without one")
    ok, msg = nv.set_locked_clocks(1005)
    assert not ok and "cannot lock clocks" in msg and "NVML" in msg


def test_recorded_samples_fit_the_power_model() -> None:
    samples = load_power_samples(FIX / "a100_power_sweep_synthetic.jsonl")
    assert len(samples) == 15
    fitted, rms = fit_power(CLOCK_POWER["A100-SXM-80GB"], samples)
    assert rms < 6
    assert fitted.static_w == pytest.approx(150, rel=0.1)
    assert "static_w" not in fitted.estimated


def test_bad_sample_file_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_text('{"mhz": 1000, "activity": 1, "power_w": 300}\n{"mhz": 1000}\n')
    with pytest.raises(LlmplanError, match=r"s.jsonl:2: not a power sample"):
        load_power_samples(p)
    with pytest.raises(LlmplanError, match="cannot read power samples"):
        load_power_samples(tmp_path / "nope.jsonl")


def test_metrics_collector_counts_joules_across_wraps(powercap: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from llmplan.energy.metrics import EnergyCollector

    reg = CollectorRegistry()
    reg.register(EnergyCollector(EnergyMeter(rapl_root=powercap, use_nvml=False)))
    _write(powercap, "intel-rapl:0", 262143300000)  # +0.3 J
    generate_latest(reg)
    _write(powercap, "intel-rapl:0", 200000)  # wrapped: +28850 uJ + 200000 uJ
    text = generate_latest(reg).decode()
    info = 'llmplan_energy_source_info{note="CPU package energy (RAPL); no GPU energy counter",source="rapl"}'
    assert f"{info} 1.0" in text
    lines = text.splitlines()
    line = next(ln for ln in lines if ln.startswith('llmplan_energy_joules_total{device="intel-rapl:0'))
    assert float(line.split()[-1]) == pytest.approx(0.3 + 0.02885 + 0.2)
    assert "llmplan_power_watts" in text


def test_server_metrics_say_modelled_only_without_a_source(tmp_path: Path, monkeypatch) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from llmplan.energy.metrics import EnergyCollector

    monkeypatch.setenv("LLMPLAN_POWERCAP", str(tmp_path / "none"))
    reg = CollectorRegistry()
    c = EnergyCollector()
    if c.meter.source == "nvml":
        pytest.skip("a GPU energy counter is present")
    reg.register(c)
    text = generate_latest(reg).decode()
    assert 'source="modelled"' in text and "llmplan_energy_joules_total" not in text


@pytest.mark.slow  # a real calibration of the tiny model (~10-20 s on 2 shared cores)
def test_calibrate_records_the_energy_source(tmp_path: Path, powercap: Path, monkeypatch) -> None:
    import json

    from typer.testing import CliRunner

    from llmplan.cli.app import app

    monkeypatch.setenv("LLMPLAN_POWERCAP", str(powercap))
    out = tmp_path / "prof.json"
    args = ["calibrate", "--dummy-weights", "llama-tiny", "--out", str(out), "--max-batch", "4",
            "--max-context", "128", "--max-chunk", "32", "--repeats", "1", "--block-size", "8"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    e = json.loads(out.read_text())["meta"]["energy"]
    if e["source"] == "nvml":
        pytest.skip("a GPU energy counter is present")
    assert e["source"] == "rapl" and e["joules"] == 0.0  # the recorded counters did not move
    assert "energy over the timed runs: 0.0 J" in res.output
