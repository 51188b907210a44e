"""The router's load snapshot means the same live and simulated.

A real engine (llama-tiny, real forward passes) exports its queue, its queued prompt tokens,
its KV blocks and its compute time on /metrics; the front end turns that text into the
snapshot its router reads. The simulator fills the same snapshot from the same scheduler
state. Queued requests are counted once (``waiting``), not again as ``running``.
"""

from __future__ import annotations

import pytest

from llmplan.frontend.backends import Backend, BackendPool, scrape_load
from llmplan.routing import get_router
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.server.metrics import ServerMetrics
from llmplan.runtime.sim import LinearCost, SimConfig
from llmplan.runtime.sim.simulator import Simulation
from llmplan.workload.types import RequestSpec, Workload

PROMPTS = [30, 70, 120]


@pytest.fixture(scope="module")
def engine():
    from llmplan.runtime.factory import build_engine

    # Whole-prompt prefill, one sequence per step: after one step two requests are still queued.
    return build_engine(dummy_weights="llama-tiny", max_num_seqs=1, num_kv_blocks=128, chunked_prefill=False)


@pytest.mark.slow
def test_live_snapshot_is_filled_like_the_simulators(engine) -> None:
    llm = engine.engine  # the engine loop is not started: the test steps it
    for k, n in enumerate(PROMPTS):
        ids = [5 + i % 50 for i in range(n)]
        req = GenerateRequest(f"r{k}", ids, SamplingParams(max_tokens=4, ignore_eos=True))
        llm.add_request(req, lambda out: None)
    metrics = ServerMetrics(engine.stats, "llama-tiny")
    b = Backend("b0", "http://unused", max_inflight=8, inflight=len(PROMPTS))
    scrape_load(b, metrics.render().decode(), now=100.0)
    assert b.busy is None  # one scrape: no interval yet
    llm.step()  # prefills the first request alone (max_num_seqs=1)
    busy_s = engine.stats().busy_seconds_total
    assert busy_s > 0
    scrape_load(b, metrics.render().decode(), now=100.0 + 4 * busy_s)
    assert b.busy == pytest.approx(0.25, rel=1e-3)  # a quarter of the interval spent computing

    pool = BackendPool([b], get_router("least-loaded"))
    (live,) = pool.loads([b])

    # The simulator's snapshot of the same three requests after the same first step.
    reqs = [RequestSpec(k, 0.0, n, 4) for k, n in enumerate(PROMPTS)]
    sim = Simulation(Workload("snap", reqs), SimConfig(instances=1, cost=LinearCost(), num_blocks=128,
                                                       max_num_seqs=1, model="llama-tiny"))  # fmt: skip
    inst = sim.instances[0]
    for seq in _seqs(reqs):
        inst.sched.add(seq, 0.0)
    batch = inst.sched.schedule(0.0)
    inst.sched.update(batch, inst.executor.execute(batch), 0.01)
    simulated = sim._loads(sim.instances)[0]

    for field in ("waiting", "running", "waiting_tokens", "kv_blocks_used", "kv_blocks_total"):
        assert getattr(live, field) == getattr(simulated, field), field
    assert (live.waiting, live.running, live.waiting_tokens) == (2, 1, PROMPTS[1] + PROMPTS[2])
    assert live.queue_len == len(PROMPTS)  # each request counted once


def _seqs(reqs):
    from llmplan.runtime.core.types import SeqState

    return [SeqState(spec=r) for r in reqs]


@pytest.mark.slow  # a front end and two backend processes
def test_a_live_system_run_records_the_deployment_it_ran(tmp_path) -> None:
    from llmplan.bench.live import LiveConfig, run_live_system
    from llmplan.bench.systems import get_system
    from llmplan.deployment import DeploymentSpec

    wl = Workload("tiny", [RequestSpec(k, 0.05 * k, 20 + k, 3) for k in range(3)])
    # banaserve: the system whose live deployment realises its definition only in part.
    run = run_live_system("banaserve", wl, tmp_path / "bana", LiveConfig(max_num_seqs=8, num_kv_blocks=256))
    assert [r.status for r in run.result.records] == ["ok"] * 3
    spec = DeploymentSpec.from_dict(run.deployment)
    assert [i.name for i in spec.instances] == ["prefill0", "decode0"]
    assert [i.role for i in spec.instances] == ["prefill", "decode"]
    assert [i.num_kv_blocks for i in spec.instances] == [256, 256]
    # The router the one definition names (llmplan.bench.systems), as the server reports it.
    assert spec.router == get_system("banaserve").router == "banaserve" and spec.engine.max_num_seqs == 8
    assert run.pd_handoffs == 3 and run.pd_failures == 0
    assert any("controller" in g for g in run.gaps)
