"""The simulator: closed-form decode runs equal stepping; P/D hand-off; rejection; config errors."""

from __future__ import annotations

import random

import pytest

from llmplan.errors import LlmplanError
from llmplan.plan.costmodel import BatchShape
from llmplan.runtime.sim import LinearCost, SimConfig, decode_run, default_cost, simulate
from llmplan.runtime.sim.simulator import Simulation
from llmplan.workload.types import SLO, RequestSpec, Workload


def _workload(n=160, rate=6.0, seed=0, max_prompt=900, max_out=300, slo=False):
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.expovariate(rate)
        s = SLO(e2e_s=rng.uniform(1, 60)) if slo else SLO()
        reqs.append(RequestSpec(i, t, rng.randint(1, max_prompt), rng.randint(1, max_out), slo=s))
    return Workload("random", reqs)


ROOFLINE = default_cost("llama-2-7b", "A100-SXM-80GB")


@pytest.mark.parametrize("cost", [LinearCost(), ROOFLINE], ids=["linear", "roofline"])
@pytest.mark.parametrize("seqs,ctx", [(1, 10), (40, 20_000), (200, 50_000), (256, 900_000)])
def test_decode_run_equals_the_stepwise_sum(cost, seqs, ctx):
    kmax = 700
    step = [cost.iteration_time(BatchShape(decode_seqs=seqs, decode_ctx=ctx + j * seqs)) for j in range(kmax)]
    ends = [sum(step[: j + 1]) for j in range(kmax)]
    run = decode_run(cost, BatchShape(decode_seqs=seqs, decode_ctx=ctx), kmax)
    assert run.steps == kmax
    assert run.duration_s == pytest.approx(ends[-1], rel=1e-12)
    assert run.ends() == pytest.approx(ends, rel=1e-12)
    # A budget keeps exactly the steps that end before it, and always at least one.
    budget = ends[kmax // 3] + 1e-9
    cut = decode_run(cost, BatchShape(decode_seqs=seqs, decode_ctx=ctx), kmax, budget)
    assert cut.steps == kmax // 3 + 1
    assert cut.count_before((ends[99] + ends[100]) / 2) == 100
    assert decode_run(cost, BatchShape(decode_seqs=seqs, decode_ctx=ctx), kmax, 0.0).steps == 1


CASES = {
    "fcfs-least-loaded": dict(instances=2, router="least-loaded"),
    "fcfs-jsq-roofline": dict(instances=2, router="jsq", cost=ROOFLINE, num_blocks=300),
    "chunked": dict(instances=2, chunked_prefill=True, max_num_batched_tokens=256),
    "static-fcfs": dict(instances=2, policy="static-fcfs", policy_kwargs={"max_batch_size": 8}),
    "slo-odbs-noisy": dict(instances=2, policy="slo-odbs", predictor="noisy:0.6"),
    "s3-noisy": dict(instances=2, policy="s3", predictor="noisy:0.5"),
    "sjf": dict(instances=1, policy="sjf", predictor="oracle", max_num_seqs=16),
    # Clock-reading policies (aging, late tier): runs are cut where their order can change.
    "slo-odbs-cb-noisy": dict(instances=2, policy="slo-odbs-cb", predictor="noisy:0.6",
                              policy_kwargs={"max_wait_s": 4.0}),
    "slo-dbs-cb-chunked": dict(instances=2, policy="slo-dbs-cb", chunked_prefill=True,
                               max_num_batched_tokens=128, policy_kwargs={"max_wait_s": 1.0}),
    "odbs-cb": dict(instances=1, policy="odbs-cb", predictor="oracle", max_num_seqs=6,
                    policy_kwargs={"max_wait_s": 1.0}),
    "disaggregated": dict(instances=3, disaggregation=(1, 2), router="least-loaded", kv_bytes_per_token=4096),
    "token-times": dict(instances=2, record_token_times=True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_forward_gives_exactly_the_step_by_step_result(name):
    kw = dict(cost=LinearCost(), num_blocks=200, block_size=16, sample_interval_s=0.5)
    kw.update(CASES[name])
    wl = _workload(slo=True)
    fast = simulate(wl, SimConfig(**kw, fast_forward=True))
    slow = simulate(wl, SimConfig(**kw, fast_forward=False))
    assert fast.counters["decode_runs"] > 0 and slow.counters["decode_runs"] == 0
    skip = {"decode_runs", "decode_run_steps", "run_splits"}
    assert {k: v for k, v in fast.counters.items() if k not in skip} == pytest.approx(
        {k: v for k, v in slow.counters.items() if k not in skip}
    )
    for a, b in zip(fast.records, slow.records, strict=True):
        assert (a.rid, a.status, a.instance, a.output_tokens, a.preemptions) == (
            b.rid, b.status, b.instance, b.output_tokens, b.preemptions)
        for f in ("first_scheduled_s", "first_token_s", "finish_s"):
            assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-9, abs=1e-9)
        if a.token_times_s is not None:
            assert a.token_times_s == pytest.approx(b.token_times_s, rel=1e-9, abs=1e-9)
            assert len(a.token_times_s) == a.output_tokens
    assert len(fast.samples) == len(slow.samples)
    for a, b in zip(fast.samples, slow.samples, strict=True):
        assert (a.instance, a.running, a.waiting, a.kv_blocks_used) == (b.instance, b.running, b.waiting,
                                                                      b.kv_blocks_used)
        assert a.busy_frac == pytest.approx(b.busy_frac, abs=1e-9)


def test_small_kv_forces_preemptions_and_every_request_still_completes():
    wl = _workload(n=120, rate=20)
    res = simulate(wl, SimConfig(instances=1, cost=LinearCost(), num_blocks=80, watermark=0))
    assert res.counters["preemptions"] > 0
    assert all(r.status == "ok" and r.output_tokens == s.output_tokens
               for r, s in zip(res.records, wl.requests, strict=True))


def test_disaggregated_mode_moves_kv_and_pays_the_transfer():
    wl = _workload(n=60)
    delay = 2.0
    cfg = SimConfig(instances=3, disaggregation=(1, 2), cost=LinearCost(), num_blocks=400,
                    kv_bytes_per_token=1000, kv_transfer_time=lambda tokens, src, dst: delay)
    res = simulate(wl, cfg)
    multi = [r for r in res.records if r.output_tokens > 1]
    assert res.counters["kv_transfers"] == len(multi)
    assert res.counters["kv_transfer_bytes"] == sum(r.prompt_tokens for r in multi) * 1000
    assert res.counters["kv_transfer_s"] == pytest.approx(delay * len(multi))
    for r in multi:
        assert r.instance in ("d0", "d1")
        # First token comes from the prefill instance; the second only after the KV arrived.
        assert r.finish_s - r.first_token_s >= delay
    assert {r.instance for r in multi} == {"d0", "d1"}
    assert all(r.status == "ok" for r in res.records)


def test_disaggregation_assigns_roles_to_an_explicit_instance_list():
    from llmplan.runtime.sim import InstanceSpec

    specs = [InstanceSpec(f"x{k}", LinearCost(), 300) for k in range(3)]
    res = simulate(_workload(n=30), SimConfig(instances=specs, disaggregation=(1, 2), kv_bytes_per_token=10))
    assert [i["role"] for i in res.meta["instances"]] == ["prefill", "decode", "decode"]
    assert res.counters["kv_transfers"] > 0
    with pytest.raises(LlmplanError, match="needs 4 instances but the cluster has 3"):
        simulate(_workload(n=3), SimConfig(instances=specs, disaggregation=(2, 2)))


def test_kv_transfer_time_from_link_bandwidth():
    wl = Workload("one", [RequestSpec(0, 0.0, 1000, 2)])
    free = LinearCost(base_s=0.0, per_token_s=0.0, per_ctx_s=0.0)
    cfg = SimConfig(instances=2, disaggregation=(1, 1), cost=free, num_blocks=100, kv_bytes_per_token=1e6,
                    kv_link_gbps=10.0, kv_link_latency_s=0.0)
    res = simulate(wl, cfg)
    assert res.counters["kv_transfer_s"] == pytest.approx(1000 * 1e6 / 10e9)
    assert res.records[0].finish_s == pytest.approx(0.1)


def test_impossible_requests_are_rejected_with_a_reason_and_the_rest_run():
    wl = Workload("w", [RequestSpec(0, 0.0, 5000, 3), RequestSpec(1, 0.1, 10, 3), RequestSpec(2, 0.2, 10, 0),
                        RequestSpec(3, 0.3, 0, 4)])
    res = simulate(wl, SimConfig(instances=2, cost=LinearCost(), num_blocks=100, block_size=16))
    assert [r.status for r in res.records] == ["rejected", "ok", "rejected", "rejected"]
    # The server's words: the context is the KV pool here (100 blocks x 16 tokens).
    assert "5000 tokens" in res.records[0].reason and "context is 1600 tokens" in res.records[0].reason
    assert "0 output tokens" in res.records[2].reason
    assert "prompt has 0 tokens" in res.records[3].reason
    assert res.counters["rejected"] == 3 and res.counters["completed"] == 1


def test_progress_reaches_the_total_and_config_errors_are_one_line():
    seen = []
    wl = _workload(n=50)
    cfg = SimConfig(instances=1, cost=LinearCost(), num_blocks=300)
    simulate(wl, cfg, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (50, 50) and all(d <= t for d, t in seen)
    with pytest.raises(LlmplanError, match="needs 5 instances but the cluster has 4"):
        simulate(wl, SimConfig(instances=4, disaggregation=(2, 3), cost=LinearCost(), num_blocks=10))
    with pytest.raises(LlmplanError, match="static batching"):
        simulate(wl, SimConfig(policy="static-fcfs", instances=2, disaggregation=(1, 1), cost=LinearCost(),
                               num_blocks=10))
    # As in the engine (runtime.core.scheduler.serving_config), a static policy ignores chunked prefill.
    static = SimConfig(policy="static-fcfs", chunked_prefill=True, cost=LinearCost(), num_blocks=300)
    sim = Simulation(wl, static)
    assert sim.instances[0].sched.config.chunked_prefill is False
    with pytest.raises(LlmplanError, match="unknown router"):
        simulate(wl, SimConfig(router="random-ish", cost=LinearCost(), num_blocks=10))
    bad = Workload("bad", [RequestSpec(0, float("nan"), 10, 1)])
    with pytest.raises(LlmplanError, match="arrival time"):
        simulate(bad, SimConfig(cost=LinearCost(), num_blocks=10))


def test_default_cost_sizes_kv_from_gpu_memory():
    cost = default_cost("llama-2-13b", "A100-SXM-80GB")
    blocks = cost.kv_capacity_blocks(16)
    # 80 GB * 0.9 - 26 GB of weights - workspace, at 0.8 MB per token: ~55k tokens.
    assert 40_000 < blocks * 16 < 70_000
    res = simulate(_workload(n=20), SimConfig(instances=1))
    assert all(r.status == "ok" for r in res.records)
    assert res.meta["instances"][0]["num_blocks"] == blocks


def test_tick_hooks_and_prefix_cache_hook_reach_controllers_and_routers(monkeypatch):
    seen_ticks, seen_prefix = [], []

    def hook(sim, now):
        for inst in sim.instances:
            sim.materialize(inst, now)  # a controller would now move work between instances
        seen_ticks.append(now)

    class PrefixRouter:
        name = "prefix-probe"

        def route(self, spec, loads):
            seen_prefix.append([ld.cached_prefix_tokens(spec) for ld in loads])
            return 0

    from llmplan.routing import ROUTERS

    monkeypatch.setitem(ROUTERS, "prefix-probe", PrefixRouter)
    wl = _workload(n=40)
    kw = dict(instances=2, cost=LinearCost(), num_blocks=300, router="prefix-probe",
              prefix_cache=lambda name, spec: 7 if name == "i1" else 0)
    hooked = simulate(wl, SimConfig(**kw, tick_hooks=[hook]))
    plain = simulate(wl, SimConfig(**kw))
    assert seen_ticks and seen_prefix[0] == [0, 7]
    # Materialising runs at every tick changes nothing: same records either way.
    plain_finish = [r.finish_s for r in plain.records]
    assert [r.finish_s for r in hooked.records] == pytest.approx(plain_finish, rel=1e-9)
