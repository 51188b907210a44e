"""The simulator refuses what the server refuses, and its cost follows events, not idle time."""

from __future__ import annotations

from llmplan.runtime.core.limits import context_rejection, http_reason
from llmplan.runtime.sim import LinearCost, SimConfig, simulate
from llmplan.workload.types import RequestSpec, Workload


def test_requests_beyond_the_models_context_are_rejected_with_the_servers_reason():
    # llama-2-13b's context is 4096 tokens; the KV pool (5000 blocks x 16) is much larger, so
    # only the model's context can refuse these.
    reqs = [
        RequestSpec(0, 0.0, 100_000, 10),  # prompt alone beyond the context
        RequestSpec(1, 0.1, 4000, 200),  # prompt fits, prompt + output does not
        RequestSpec(2, 0.2, 4000, 96),  # exactly 4096: fits
        RequestSpec(3, 0.3, 100, 20),
    ]
    res = simulate(Workload("ctx", reqs), SimConfig(instances=1, cost=LinearCost(), num_blocks=5000))
    by = {r.rid: r for r in res.records}
    assert [by[k].status for k in range(4)] == ["rejected", "rejected", "ok", "ok"]
    for k in (0, 1):
        want = context_rejection(reqs[k].prompt_tokens, reqs[k].output_tokens, 4096)
        assert want is not None and by[k].reason == http_reason(400, want.message)
        assert by[k].first_token_s is None and by[k].output_tokens == 0
    assert "100000 tokens" in by[0].reason and "4096" in by[0].reason
    assert res.counters["rejected"] == 2 and res.counters["completed"] == 2


def test_max_model_len_caps_the_models_context():
    reqs = [RequestSpec(0, 0.0, 1000, 10), RequestSpec(1, 0.0, 100, 10)]
    cfg = SimConfig(instances=1, cost=LinearCost(), num_blocks=5000, max_model_len=512)
    res = simulate(Workload("cap", reqs), cfg)
    assert [r.status for r in res.records] == ["rejected", "ok"]
    assert "context is 512 tokens" in res.records[0].reason


def test_the_clock_jumps_over_idle_time():
    # Epoch-millisecond timestamps read as seconds: 4 requests spread over ~3.6e9 "seconds".
    t0 = 1_700_000_000_000.0
    reqs = [RequestSpec(k, t0 + d, 100, 20) for k, d in enumerate((0.0, 5000.0, 900_000.0, 3_600_000.0))]
    res = simulate(Workload("epoch", reqs), SimConfig(instances=2, cost=LinearCost(), num_blocks=500))
    assert [r.status for r in res.records] == ["ok"] * 4
    # Samples are taken while something runs (and once per idle gap), not every second of the gaps.
    assert len(res.samples) <= 2 * 4 * 4
    for r in res.records:
        assert r.first_token_s >= r.arrival_s and r.finish_s - r.arrival_s < 10.0


def test_cost_is_linear_in_requests_not_in_the_time_span():
    def run(gap: float, n: int) -> int:
        reqs = [RequestSpec(k, k * gap, 50, 5) for k in range(n)]
        cfg = SimConfig(instances=1, cost=LinearCost(), num_blocks=500)
        return len(simulate(Workload("gap", reqs), cfg).samples)

    # The same requests 10^6 s apart cost no more samples than 10 s apart.
    assert run(1e6, 20) <= run(10.0, 20)
    assert run(1e6, 40) <= 2 * run(1e6, 20) + 2
