"""What a person reads first: report.md's opening answer, and plots whose panels show real peaks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmplan import __version__
from llmplan.metrics import InstanceSample, RequestRecord, RunResult, compute_metrics
from llmplan.report import BenchReport
from llmplan.report.markdown import answer, render_markdown
from llmplan.report.plots import _binned
from llmplan.workload.types import SLO

SLO_A = SLO(ttft_s=1.0, tpot_s=0.2, e2e_s=10.0)


def _run(misses: int, n: int = 100) -> RunResult:
    """n completed requests; the first ``misses`` miss their TTFT target (2 s against 1 s)."""
    recs = []
    for i in range(n):
        ttft = 2.0 if i < misses else 0.3
        first = i + ttft
        recs.append(RequestRecord(i, float(i), 100, 11, SLO_A, "ok", None, "i0", float(i), first, first + 1.0,
                                  0, [first + 0.1 * k for k in range(11)]))  # fmt: skip
    samples = [InstanceSample(float(i), "i0", 1, 0, 3, 10, 0.5) for i in range(n)]
    return RunResult(recs, samples, {"preemptions": 0, "padding_tokens": 0})


def _report(**misses: int) -> BenchReport:
    return BenchReport(
        runs={lb.replace("_", "-"): compute_metrics(_run(k)) for lb, k in misses.items()},
        config={},
        workload={"name": "hand", "requests": 100, "offered_rate_rps": 1.0},
        seed=0,
        version=__version__,
        created_utc="2026-01-01T00:00:00Z",
    )


def test_report_opens_with_the_winner_and_the_margin() -> None:
    rep = _report(fcfs=30, slo_odbs_cb=10, s3=20)
    md = render_markdown(rep, [])
    first = md.split("\n\n")[1]  # right under the title
    assert first.startswith("**slo-odbs-cb wins at 1.00 req/s**: 90.0% of requests met every SLO")
    assert "+10.0 points over s3" in first and "fcfs 70.0%" in first


def test_a_tie_is_called_a_tie_and_a_hair_is_called_narrow() -> None:
    tie = " ".join(answer(_report(fcfs=5, s3=5)))
    assert tie.startswith("**No winner at 1.00 req/s**: fcfs, s3 tie at 95.0%")
    narrow = " ".join(answer(_report(fcfs=6, s3=5)))
    assert "**s3 wins" in narrow  # 1 point: a win
    close = BenchReport(
        runs={"a": compute_metrics(_run(6, n=1000)), "b": compute_metrics(_run(5, n=1000))},
        config={}, workload={}, seed=0, version=__version__, created_utc="",
    )  # fmt: skip
    text = " ".join(answer(close))
    assert text.startswith("**b leads narrowly**") and "may not survive another --seed" in text


def test_binned_panels_keep_the_real_peak_and_stay_readable() -> None:
    """A single-sample KV spike and a one-sample queue survive binning (a rolling mean hid them)."""
    n = 36000  # an hour at 0.1 s samples
    t = np.arange(n) * 0.1
    used = np.full(n, 400)
    used[12345] = 990  # one sample at 99% of 1000 blocks
    waiting = np.zeros(n, dtype=int)
    waiting[20000] = 7
    g = pd.DataFrame({"t_s": t, "kv_blocks_used": used, "kv_blocks_total": 1000, "waiting": waiting,
                      "running": 5})  # fmt: skip
    edges = np.linspace(t[0], t[-1], 121)
    b = _binned(g, edges)
    assert len(b["kv"]) == 120  # 120 points to draw, not 36,000
    assert np.nanmax(b["kv"]) == 99.0 and np.nanmin(b["kv"]) == 40.0
    assert np.nanmax(b["waiting"]) == 7 and np.count_nonzero(b["waiting"]) == 1
    assert np.allclose(b["running"], 5)
    # The rolling mean the old plot drew would have shown ~40%: the spike vanished.
    assert pd.Series(used / 10).rolling(n // 100, min_periods=1).mean().max() < 42


def test_the_sweep_leader_is_named_by_its_interpolated_goodput_and_ties_are_ties() -> None:
    rep = _report(fcfs=5, s3=5)
    rep.goodput_distserve = {"fcfs": {"rate_rps": 4.0, "interpolated_rps": 7.15},
                             "s3": {"rate_rps": 4.0, "interpolated_rps": 9.78}}  # fmt: skip
    text = " ".join(answer(rep))
    assert "**s3 9.78 req/s** (vs fcfs 7.15)" in text
    rep.goodput_distserve = {"fcfs": {"rate_rps": 4.0, "interpolated_rps": None},
                             "s3": {"rate_rps": 4.0, "interpolated_rps": None}}  # fmt: skip
    assert "every run ties at 4.00 req/s" in " ".join(answer(rep))


def test_repeat_intervals_are_part_of_the_answer() -> None:
    from llmplan.report.repeats import aggregate

    runs = {"fcfs": [compute_metrics(_run(k)).summary for k in (30, 28, 31)],
            "s3": [compute_metrics(_run(k)).summary for k in (10, 12, 9)]}  # fmt: skip
    rep = _report(fcfs=30, s3=10)
    rep.repeats = aggregate(runs, [0, 1, 2])
    text = " ".join(answer(rep))
    assert "**s3 wins" in text and "Over 3 seeds (mean ± 95% interval), SLO attainment: fcfs 70.3% ±" in text
    assert "s3 vs fcfs: +19.3 ±" in text and "points, paired by seed (better)." in text
