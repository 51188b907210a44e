"""The README's central claim: the simulator drives the engine's scheduler.

The same request stream goes through the simulator (its Scheduler, stop rule and cost-model
executor, on the virtual clock) and through the engine's :class:`LLMEngine` (its request
validation, its Scheduler built by the engine factory, its stop rule and token handling) with
a fake executor that takes exactly the simulator's step times. Step by step, both must run
the same batches, preempt the same sequences and finish the same requests at the same times.
"""

from __future__ import annotations

import random

import pytest

from llmplan.runtime.core.types import StepResult
from llmplan.runtime.sim import LinearCost, SimConfig
from llmplan.runtime.sim.pricing import CostExecutor, batch_shape
from llmplan.runtime.sim.simulator import Simulation
from llmplan.workload.types import RequestSpec, Workload

COST = LinearCost()
BLOCK = 16


def _stream(n: int, seed: int) -> list[RequestSpec]:
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.choice([0.0, rng.expovariate(30.0)])  # bursts: simultaneous arrivals share batches
        reqs.append(RequestSpec(i, round(t, 6), rng.randint(5, 700), rng.randint(1, 60)))
    return reqs


def _items(batch) -> tuple:
    return tuple((it.seq.rid, it.num_new_tokens, it.context_len, it.is_prefill) for it in batch.items)


class _RecordingCost:
    """The simulator's executor, logging every step it prices."""

    def __init__(self, log: list) -> None:
        self.inner = CostExecutor(COST)
        self.log = log

    def execute(self, batch):
        res = self.inner.execute(batch)
        self.log.append((_items(batch), res.duration_s))
        return res


def _simulate(reqs, num_blocks, args) -> tuple[list, dict, list]:
    cfg = SimConfig(instances=1, cost=COST, num_blocks=num_blocks, block_size=BLOCK, model="llama-tiny",
                    fast_forward=False, **args)  # fmt: skip
    sim = Simulation(Workload("eq", list(reqs)), cfg)
    log: list = []
    sim.instances[0].executor = _RecordingCost(log)
    res = sim.run()
    return log, dict(res.counters), sorted((r.finish_s, r.rid, r.status) for r in res.records)


def _engine(reqs, num_blocks, args) -> tuple[list, dict, list]:
    from llmplan.predict.oracle import parse_predictor
    from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
    from llmplan.runtime.engine.config import catalog_config
    from llmplan.runtime.engine.llm_engine import LLMEngine
    from llmplan.runtime.engine.tokenizer import load_tokenizer
    from llmplan.runtime.factory import make_scheduler, resolve_policy

    cfg = catalog_config("llama-tiny")
    clock = [0.0]
    log: list = []

    class FakeExecutor:
        """Takes the simulator's step time and emits a (non-EOS) token where a step samples."""

        def execute(self, batch):
            d = COST.iteration_time(batch_shape(batch))
            nxt = {}
            for it in batch.items:
                if it.context_len + it.num_new_tokens == it.seq.spec.prompt_tokens + it.seq.num_generated:
                    nxt[it.seq.rid] = 7
            log.append((_items(batch), d))
            clock[0] += d
            return StepResult(d, nxt)

    policy = resolve_policy(args.get("policy", "fcfs"))
    ctx = min(cfg.max_model_len, num_blocks * BLOCK)
    sched = make_scheduler(policy, num_blocks, BLOCK, args["max_num_seqs"], args["max_num_batched_tokens"],
                           args["chunked_prefill"], ctx)  # fmt: skip
    pred = parse_predictor("oracle") if policy.uses_prediction else None
    eng = LLMEngine(cfg, FakeExecutor(), sched, load_tokenizer(None, cfg.vocab_size), "llama-tiny", ctx,
                    predictor=pred)  # fmt: skip
    eng.now = lambda: clock[0]  # the engine's clock, virtual: the test owns time
    outcome: dict[str, tuple] = {}

    def sink_for(rid: int):
        def sink(out) -> None:
            if out.finished:
                outcome[out.request_id] = (clock[0], rid, "ok" if out.error is None else "rejected")

        return sink

    pending = sorted(reqs, key=lambda r: (r.arrival_s, r.rid))
    while pending or eng.has_work():
        now = clock[0]
        while pending and pending[0].arrival_s <= clock[0]:
            r = pending.pop(0)
            clock[0] = r.arrival_s  # the request reaches the engine at its arrival time
            sp = SamplingParams(max_tokens=r.output_tokens, ignore_eos=True)
            ids = [11 + (r.rid + k) % 900 for k in range(r.prompt_tokens)]
            eng.add_request(GenerateRequest(f"r{r.rid}", ids, sp), sink_for(r.rid))
            clock[0] = max(now, clock[0])
        if not eng.has_work():
            clock[0] = pending[0].arrival_s
            continue
        eng.step()
    return log, sched.stats.as_dict(), sorted(outcome.values())


CASES = {
    "fcfs-chunked-tight-kv": dict(policy="fcfs", max_num_seqs=8, max_num_batched_tokens=256,
                                  chunked_prefill=True),
    "fcfs-whole-prompts": dict(policy="fcfs", max_num_seqs=16, max_num_batched_tokens=512,
                               chunked_prefill=False),
    "sjf-oracle": dict(policy="sjf", max_num_seqs=8, max_num_batched_tokens=256, chunked_prefill=True),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_simulator_and_engine_schedule_identically(case: str) -> None:
    args = CASES[case]
    reqs = _stream(40, seed=len(case))
    num_blocks = 90  # 1440 tokens of KV for up to 8-16 sequences: preemptions happen
    sim_log, sim_counters, sim_done = _simulate(reqs, num_blocks, args)
    eng_log, eng_counters, eng_done = _engine(reqs, num_blocks, args)
    assert len(sim_log) > 40
    for k, (a, b) in enumerate(zip(sim_log, eng_log, strict=False)):
        assert a == b, f"step {k} differs: simulator {a} vs engine {b}"
    assert len(sim_log) == len(eng_log)
    assert sim_counters["preemptions"] == eng_counters["preemptions"]
    if case.startswith("fcfs-chunked"):
        assert sim_counters["preemptions"] > 0  # the case exercises preemption by recompute
    assert sim_done == eng_done  # same requests finish, in the same order, at the same times
