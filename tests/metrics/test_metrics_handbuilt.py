"""Metrics on hand-built runs whose right answers are worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llmplan.metrics import (
    InstanceSample,
    InvalidRunResultError,
    RequestRecord,
    RunResult,
    compute_metrics,
    distserve_goodput,
)
from llmplan.workload.types import SLO, RequestSpec, Workload

TIGHT = SLO(ttft_s=2.0, tpot_s=0.6, e2e_s=4.0)


def _run() -> RunResult:
    recs = [
        # TTFT 1.0, TPOT (3.0-1.0)/4 = 0.5, ITL 4 x 0.5, E2E 3.0: meets all three targets.
        RequestRecord(0, 0.0, 100, 5, TIGHT, "ok", None, "i0", 0.5, 1.0, 3.0, 0, [1.0, 1.5, 2.0, 2.5, 3.0]),
        # TTFT 3.0 > 2, TPOT 2/2 = 1.0 > 0.6, E2E 5.0 > 4: misses all three.
        RequestRecord(1, 1.0, 200, 3, TIGHT, "ok", None, "i0", 1.0, 4.0, 6.0, 1, [4.0, 5.0, 6.0]),
        # Rejected: no latency, but counts as a miss in every attainment denominator.
        RequestRecord(2, 2.0, 9000, 10, TIGHT, "rejected", "prompt exceeds KV capacity", None),
        # No targets, one token (no TPOT): meets its (empty) SLO set.
        RequestRecord(3, 3.0, 10, 1, SLO(), "ok", None, "i1", 3.0, 3.2, 3.2, 0, [3.2]),
    ]
    samples = [
        InstanceSample(0.0, "i0", 0, 0, 0, 10, 0.0),
        InstanceSample(1.0, "i0", 1, 0, 5, 10, 1.0),
        InstanceSample(3.0, "i0", 1, 1, 10, 10, 0.5),
    ]
    return RunResult(recs, samples, {"preemptions": 1, "padding_tokens": 7})


def _workload(n: int = 4) -> Workload:
    return Workload("hand", [RequestSpec(i, float(i), 1, 1) for i in range(n)])


def test_per_request_values() -> None:
    m = compute_metrics(_run(), _workload())
    df = m.requests.set_index("rid")
    assert df.loc[0, "ttft_s"] == pytest.approx(1.0)
    assert df.loc[0, "tpot_s"] == pytest.approx(0.5)
    assert df.loc[0, "itl_mean_s"] == pytest.approx(0.5)
    assert df.loc[0, "queueing_s"] == pytest.approx(0.5)
    assert df.loc[1, "tpot_s"] == pytest.approx(1.0)
    assert df.loc[1, "e2e_s"] == pytest.approx(5.0)
    assert bool(df.loc[0, "slo_met"]) and not bool(df.loc[1, "slo_met"])
    assert not bool(df.loc[2, "slo_met"]) and bool(df.loc[3, "slo_met"])
    assert math.isnan(df.loc[2, "ttft_s"]) and math.isnan(df.loc[3, "tpot_s"])
    assert math.isnan(df.loc[3, "ttft_met"])  # no target -> not applicable


def test_aggregates() -> None:
    s = compute_metrics(_run(), _workload()).summary
    assert (s["requests"], s["completed"], s["rejected"], s["failed"]) == (4, 3, 1, 0)
    assert s["failure_reasons"] == {"prompt exceeds KV capacity": 1}
    # Each kind: r0 met, r1 missed, r2 rejected (missed), r3 has no target -> 1/3.
    for kind in ("ttft", "tpot", "e2e"):
        assert s["attainment"][kind] == pytest.approx(1 / 3)
    assert s["attainment"]["all"] == pytest.approx(2 / 4)
    assert s["duration_s"] == pytest.approx(6.0)  # first arrival 0 -> last finish 6
    assert s["goodput_rps"] == pytest.approx(2 / 6)
    assert s["throughput_rps"] == pytest.approx(3 / 6)
    assert s["output_tokens_per_s"] == pytest.approx((5 + 3 + 1) / 6)
    ttft = s["latency"]["ttft_s"]  # completed only: [1.0, 3.0, 0.2]
    assert ttft["count"] == 3 and ttft["mean"] == pytest.approx(1.4) and ttft["p50"] == pytest.approx(1.0)
    itl = s["latency"]["itl_s"]  # pooled gaps: 4 x 0.5 and 2 x 1.0
    assert itl["count"] == 6 and itl["mean"] == pytest.approx(4 / 6) and itl["p50"] == pytest.approx(0.5)
    assert s["latency"]["queueing_s"]["mean"] == pytest.approx(0.5 / 3)
    assert (s["preemptions"], s["padding_tokens"]) == (1, 7)


def test_utilization_is_time_weighted() -> None:
    u = compute_metrics(_run(), _workload()).summary["utilization"]["i0"]
    # Sample intervals 1 s and 2 s: busy (1*1 + 0.5*2)/3, KV (0.5*1 + 1.0*2)/3.
    assert u["busy_mean"] == pytest.approx(2 / 3)
    assert u["kv_mean"] == pytest.approx(2.5 / 3)
    assert u["kv_peak"] == 1.0 and u["waiting_peak"] == 1


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("finish_s", float("nan"), "finite"),
        ("first_token_s", -1.0, ">= 0"),
        ("finish_s", 0.9, "before first_token_s"),
        ("first_scheduled_s", None, None),  # allowed: not every producer records it
    ],
)
def test_bad_times_raise(field: str, value: float | None, match: str | None) -> None:
    run = _run()
    setattr(run.records[0], field, value)
    if field == "first_token_s":
        run.records[0].token_times_s = None
    if match is None:
        compute_metrics(run, _workload())
    else:
        with pytest.raises(InvalidRunResultError, match=match):
            compute_metrics(run, _workload())


def test_conservation_violations_raise() -> None:
    with pytest.raises(InvalidRunResultError, match="no record"):
        compute_metrics(_run(), _workload(5))
    run = _run()
    run.records[2].reason = None
    with pytest.raises(InvalidRunResultError, match="without a reason"):
        compute_metrics(run, _workload())
    run = _run()
    run.records.append(run.records[0])
    with pytest.raises(InvalidRunResultError, match="appears 2 times"):
        compute_metrics(run)
    run = _run()
    run.records[1].token_times_s = [4.0, 3.5, 6.0]
    with pytest.raises(InvalidRunResultError, match="backwards"):
        compute_metrics(run)
    run = _run()
    run.records[1].token_times_s = [4.0, float("nan"), 6.0]
    with pytest.raises(InvalidRunResultError, match="request 1: a token time is NaN"):
        compute_metrics(run)
    run = _run()
    run.records[1].token_times_s = [4.5, 5.0, 6.0]
    with pytest.raises(InvalidRunResultError, match="request 1: first token time"):
        compute_metrics(run)
    run = _run()
    run.records[0].finish_s = None
    with pytest.raises(InvalidRunResultError, match="status ok"):
        compute_metrics(run)


def _steady(n: int, ttft) -> RunResult:
    recs = []
    for i in range(n):
        t = ttft(i)
        recs.append(RequestRecord(i, float(i), 10, 2, SLO(), "ok", None, "i0", float(i), i + t, i + t + 0.1))
    return RunResult(recs)


def test_saturation_flag() -> None:
    rising = compute_metrics(_steady(100, lambda i: 0.1 + 0.1 * i)).summary["saturation"]
    assert rising["oversaturated"] and "TTFT rose" in rising["reasons"][0]
    flat = compute_metrics(_steady(100, lambda i: 0.2 + 0.01 * (i % 3))).summary["saturation"]
    assert not flat["oversaturated"] and flat["reasons"] == []


def test_distserve_goodput() -> None:
    g = distserve_goodput([1, 2, 3, 4], [0.99, 0.95, 0.85, 0.5], 0.9)
    assert g.rate_rps == 2 and g.interpolated_rps == pytest.approx(2.5) and not g.all_pass
    # A pass above a failure is noise: capacity stops at the first failing rate.
    assert distserve_goodput([1, 2, 3], [0.95, 0.8, 0.95], 0.9).rate_rps == 1
    assert distserve_goodput([1, 2], [0.5, 0.4], 0.9).rate_rps is None
    allpass = distserve_goodput([3, 1], [0.95, 0.99], 0.9)
    assert allpass.all_pass and allpass.rate_rps == 3
    with pytest.raises(ValueError):
        distserve_goodput([1], [0.5, 0.6])


def test_percentiles_against_numpy() -> None:
    rng = np.random.default_rng(3)
    ttfts = rng.exponential(0.5, 501)
    recs = [
        RequestRecord(i, float(i), 10, 2, SLO(), "ok", None, "i0", float(i), i + t, i + t + 0.05)
        for i, t in enumerate(ttfts)
    ]
    d = compute_metrics(RunResult(recs)).summary["latency"]["ttft_s"]
    for p in (50, 90, 99):
        assert d[f"p{p}"] == pytest.approx(float(np.percentile(ttfts, p)), rel=1e-9)


def test_queue_growth_across_unaligned_instances() -> None:
    """Two instances sampled at offset times; each waits k//10 at sample k (k = 0..199, every 0.5 s).

    First quarter of the run: mean of 0..4 = 2 per instance -> 4 in total; last quarter: mean of
    15..19 = 17 -> 34. Latencies stay flat, so only the queue signal fires.
    """
    recs = _steady(100, lambda i: 0.2).records
    samples = []
    for k in range(200):
        samples.append(InstanceSample(k * 0.5, "i0", 1, k // 10, 1, 10, 1.0))
        samples.append(InstanceSample(k * 0.5 + 0.13, "i1", 1, k // 10, 1, 10, 1.0))
    sat = compute_metrics(RunResult(recs, samples)).summary["saturation"]
    assert sat["waiting_first_quarter"] == pytest.approx(4.0)
    assert sat["waiting_last_quarter"] == pytest.approx(34.0)
    assert sat["oversaturated"] and sat["reasons"] == ["waiting queue grew from 4 to 34 requests"]
