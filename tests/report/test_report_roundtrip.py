"""Report directory: files, contents, re-rendering, and the terminal table, on hand-built runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from llmplan import __version__
from llmplan.errors import LlmplanError
from llmplan.metrics import InstanceSample, RequestRecord, RunResult, compute_metrics, distserve_goodput
from llmplan.report import BenchReport, SweepPoint, load_report, print_report, write_report
from llmplan.workload.types import SLO

SLO_A = SLO(ttft_s=1.0, tpot_s=0.2, e2e_s=10.0)


def _run(ttft_growth: float, n: int = 40) -> RunResult:
    recs, samples = [], []
    for i in range(n):
        ttft = 0.3 + ttft_growth * i
        first = i + ttft
        recs.append(RequestRecord(i, float(i), 100, 11, SLO_A, "ok", None, f"i{i % 2}", float(i), first,
                                  first + 1.0, 0, [first + 0.1 * k for k in range(11)]))  # fmt: skip
        samples.append(InstanceSample(float(i), f"i{i % 2}", 1, int(ttft_growth * i), 3, 10, 0.5))
    recs[-1].status, recs[-1].reason = "rejected", "queue full"
    recs[-1].first_token_s = recs[-1].finish_s = recs[-1].first_scheduled_s = None
    recs[-1].token_times_s = None
    return RunResult(recs, samples, {"preemptions": 2, "padding_tokens": 0})


def _report() -> BenchReport:
    runs = {"fcfs": compute_metrics(_run(0.0)), "slo-odbs": compute_metrics(_run(0.5))}
    sweep = [SweepPoint(lb, r, r, runs[lb].summary) for lb in runs for r in (0.5, 1.0)]
    gp = {lb: distserve_goodput([0.5, 1.0], [0.95, 0.5]).to_dict() for lb in runs}
    return BenchReport(
        runs=runs,
        config={"model": "llama-2-13b", "policies": list(runs)},
        workload={"name": "hand", "requests": 40, "offered_rate_rps": 1.0, "meta": {"citation": "Splitwise"}},
        seed=3,
        version=__version__,
        created_utc="2026-01-01T00:00:00Z",
        command="llmplan bench --trace hand",
        sweep=sweep,
        goodput_distserve=gp,
    )


@pytest.mark.slow
def test_write_files_and_contents(tmp_path: Path) -> None:
    rep = _report()
    written = write_report(rep, tmp_path)
    names = {p.name for p in written}
    expected = ["report.md", "report.json", "requests-fcfs.csv", "requests-slo-odbs.csv", "sweep.csv"]
    expected += ["latency_cdf.png", "policy_comparison.png", "attainment_vs_rate.png", "utilization_fcfs.png"]
    for want in expected:
        assert want in names and (tmp_path / want).stat().st_size > 0
    for png in tmp_path.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["llmplan_version"] == __version__ and data["seed"] == 3
    assert data["workload"]["meta"]["citation"] == "Splitwise"
    assert data["config"]["model"] == "llama-2-13b"
    s = data["runs"]["fcfs"]["summary"]
    assert s["requests"] == 40 and s["rejected"] == 1 and s["attainment"]["all"] == pytest.approx(39 / 40)
    csv = pd.read_csv(tmp_path / "requests-fcfs.csv")
    assert len(csv) == 40 and csv["ttft_s"].iloc[0] == pytest.approx(0.3)
    md = (tmp_path / "report.md").read_text()
    assert "over-saturated" in md and "slo-odbs" in md and "![latency_cdf](latency_cdf.png)" in md
    assert "DistServe goodput of **fcfs**: 0.500 req/s" in md


def test_rerender_is_identical(tmp_path: Path) -> None:
    write_report(_report(), tmp_path, plots=False)
    first = (tmp_path / "report.md").read_text()
    back = load_report(tmp_path)
    assert list(back.runs) == ["fcfs", "slo-odbs"] and len(back.sweep) == 4
    out2 = tmp_path / "again"
    write_report(back, out2, plots=False)
    assert (out2 / "report.md").read_text() == first


def test_edited_csv_is_caught(tmp_path: Path) -> None:
    write_report(_report(), tmp_path, plots=False)
    p = tmp_path / "requests-fcfs.csv"
    df = pd.read_csv(p)
    df.loc[0, "ttft_s"] = 99.0  # now misses its 1 s TTFT target
    df.to_csv(p, index=False)
    with pytest.raises(LlmplanError, match="does not match report.json") as err:
        load_report(tmp_path)
    _assert_numbers_differ(str(err.value))


def _assert_numbers_differ(msg: str) -> None:
    import re

    m = re.search(r"attainment (\S+) in the CSV vs (\S+) in report.json: (\d+) vs (\d+) of (\d+)", msg)
    assert m, msg
    assert m[1] != m[2] and m[3] != m[4], msg


def test_tamper_message_shows_the_difference_on_a_large_run() -> None:
    """One request of 19,366 flipped: 4 decimals print 0.6076 twice; the message must not."""
    from llmplan.report.io import _mismatch

    n = 19366
    msg = _mismatch(11767 / n, 11768 / n, n)
    _assert_numbers_differ(msg)
    assert "11767 vs 11768 of 19366 requests" in msg


def test_missing_or_bad_directory(tmp_path: Path) -> None:
    with pytest.raises(LlmplanError, match="report.json not found"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(LlmplanError, match="not valid JSON"):
        load_report(tmp_path)


def test_terminal_summary_flags_saturation() -> None:
    console = Console(record=True, width=200)
    print_report(_report(), console)
    text = console.export_text()
    header = next(line for line in text.splitlines() if "metric" in line)
    assert "fcfs" in header and "slo-odbs" in text and text.count("SATURATED") == 1
    assert "WARNING slo-odbs: the system is over-saturated" in text
    assert "1 rejected" in text and "97.5%" in text


def test_predicted_vs_measured_table() -> None:
    from llmplan.report.compare import predicted_vs_measured

    def run(ttft: float) -> RunResult:
        recs = [RequestRecord(i, float(i), 10, 3, SLO(), "ok", None, "i0", float(i), i + ttft, i + ttft + 0.2)
                for i in range(5)]  # fmt: skip
        return RunResult(recs)

    rep = _report()
    rep.runs = {"live": compute_metrics(run(1.0)), "sim:fcfs": compute_metrics(run(0.9))}
    table = predicted_vs_measured(rep)
    assert "| TTFT p50 | 1000.0 ms | 900.0 ms (-10.0%) |" in table
    assert "| TPOT p99 | 100.0 ms | 100.0 ms (+0.0%) |" in table


@pytest.mark.parametrize("time_scale", [1.0, 4.0])
def test_live_report_shows_the_rate_the_server_saw(time_scale: float) -> None:
    """--time-scale divides arrival times: the header's rate is the trace's times the scale."""
    from llmplan.bench.runner import BenchConfig, live_report
    from llmplan.workload import load_workload, offered_rate

    wl = load_workload("synthetic:rate=2,n=40", seed=1, slo="none")
    res = _run(0.0)
    res.meta = {"time_scale": time_scale}
    rep = live_report(BenchConfig(trace="synthetic"), "http://x", wl, res)
    trace_rate = offered_rate(wl)
    assert rep.workload["offered_rate_rps"] == pytest.approx(trace_rate * time_scale)
    console = Console(record=True, width=200)
    print_report(rep, console)
    title = " ".join(" ".join(console.export_text().splitlines()[:3]).split())  # the title may wrap
    assert f"at {trace_rate * time_scale:.2f} req/s" in title
    if time_scale != 1.0:
        assert f"(trace {trace_rate:.2f} req/s x --time-scale 4)" in title
        assert rep.workload["trace_offered_rate_rps"] == pytest.approx(trace_rate)
    else:
        assert "time-scale" not in title and "time_scale" not in rep.workload
