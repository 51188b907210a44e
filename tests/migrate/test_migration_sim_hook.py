"""The migration controller runs inside the simulator through a tick hook."""

from __future__ import annotations

import random

import pytest

from llmplan.migrate.controller import ControllerConfig, MigrationController
from llmplan.migrate.sim_hook import ControllerHook, MigratedCost, attention_share
from llmplan.plan.costmodel import BatchShape
from llmplan.runtime.sim import LinearCost, SimConfig, simulate
from llmplan.workload.types import RequestSpec, Workload

COST = LinearCost(base_s=0.01, per_token_s=2e-4, per_ctx_s=2e-5, per_pair_s=1e-7)


def _workload(n=150, seed=0):
    rng = random.Random(seed)
    t, reqs = 0.0, []
    for i in range(n):
        t += rng.expovariate(6.0)
        reqs.append(RequestSpec(rid=i, arrival_s=t, prompt_tokens=rng.randint(50, 400),
                                output_tokens=rng.randint(50, 300)))
    return Workload("decode-heavy", reqs)


def _config(hooks):
    return SimConfig(instances=2, disaggregation=(1, 1), cost=COST, num_blocks=4000, kv_bytes_per_token=1e5,
                     sample_interval_s=1.0, tick_hooks=hooks)


def test_migrated_cost_is_work_conserving_first_order():
    shape = BatchShape(decode_seqs=8, decode_ctx=8000)
    a = attention_share(COST, shape)
    assert a == pytest.approx(8000 * 2e-5 / COST.iteration_time(shape))
    m = MigratedCost(COST, keep=0.5)
    saved = COST.iteration_time(shape) - m.iteration_time(shape)
    assert saved == pytest.approx(0.5 * a * COST.iteration_time(shape))
    stalled = MigratedCost(COST, stall_s=0.3)
    assert stalled.iteration_time(shape) == pytest.approx(COST.iteration_time(shape) + 0.3)
    assert stalled.iteration_time(shape) == pytest.approx(COST.iteration_time(shape))  # paid once


def test_logging_only_hook_does_not_change_the_simulation():
    wl = _workload()
    base = simulate(wl, _config([]))
    hook = ControllerHook(MigrationController(ControllerConfig()), kv_bytes_per_token=1e5, apply=False)
    res = simulate(wl, _config([hook]))
    assert [(r.rid, r.first_token_s, r.finish_s) for r in res.records] == \
        [(r.rid, r.first_token_s, r.finish_s) for r in base.records]
    assert hook.controller.counters["steps"] > 5


def test_applied_attention_migration_moves_work_from_decode_to_prefill():
    wl = _workload()
    ctl = MigrationController(ControllerConfig(delta_up=0.1, delta_down=0.03))
    hook = ControllerHook(ctl, kv_bytes_per_token=1e5)
    res = simulate(wl, _config([hook]))
    assert all(r.status == "ok" for r in res.records) and len(res.records) == len(wl)
    assert hook.applied, [d.reason for d in ctl.decisions][:3]
    t, src, dst, f, a, keep, factor = hook.applied[0]
    assert (src, dst) == ("d0", "p0")  # the decode instance is the memory-bound one
    assert 0 < f <= 0.5 and 0 < a < 1 and keep < 1 and factor > 1
    assert ctl.metrics()["attention_migrations"] == len(hook.applied)
    assert all(d.measured_time_s is not None for d in ctl.decisions if d.migrates)
