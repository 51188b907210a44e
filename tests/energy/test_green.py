"""GreenServe policies in the simulator: clocks, joules, prediction, routing."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.energy.green import EcoFreq, EcoPred, EcoRoute, EnergyControl
from llmplan.energy.power import ClockedCost
from llmplan.errors import LlmplanError
from llmplan.metrics.requests import add_slo_flags, request_frame
from llmplan.plan.costmodel import BatchShape
from llmplan.routing.base import InstanceLoad
from llmplan.runtime.sim import simulate
from llmplan.runtime.sim.cluster import default_cost
from llmplan.runtime.sim.config import SimConfig
from llmplan.workload.loader import load_workload
from llmplan.workload.types import SLO, RequestSpec


@pytest.fixture(scope="module")
def cost() -> ClockedCost:
    return ClockedCost.wrap(default_cost("llama-3.1-8b", "A100-SXM-80GB"))


def _run(slo: str, mode: str, fast_forward: bool = True, n: int = 150):
    wl = load_workload(f"synthetic:n={n},rate=4", slo=slo)
    cfg = SimConfig(instances=2, disaggregation=(1, 1), model="llama-3.1-8b", router="jsq",
                    energy=EnergyControl(mode=mode), fast_forward=fast_forward)
    res = simulate(wl, cfg)
    att = float(add_slo_flags(request_frame(res))["slo_met"].mean())
    return res, att


def test_greenserve_saves_energy_at_loose_slos_and_keeps_attainment() -> None:
    slo = "fixed:ttft=2,tpot=0.1,e2e=1000"
    base, a0 = _run(slo, "max")
    green, a1 = _run(slo, "greenserve")
    e0, e1 = base.meta["energy"], green.meta["energy"]
    assert e0["mean_clock_mhz"] == 1410
    assert e1["mean_clock_mhz"] < 1300
    assert e1["energy_j"] < 0.9 * e0["energy_j"]
    assert a1 >= a0 - 0.02
    assert e1["prefill_energy_j"] + e1["decode_energy_j"] == pytest.approx(e1["busy_energy_j"])
    assert green.counters["energy_j"] == e1["energy_j"]
    assert e1["energy_per_output_token_j"] > 0 and e1["ecopred_mape"] < 0.15


def test_tight_slos_keep_the_maximum_clock() -> None:
    slo = "fixed:ttft=0.01,tpot=0.001,e2e=1000"  # nothing can meet these: no slack to spend
    base, _ = _run(slo, "max", n=60)
    green, _ = _run(slo, "greenserve", n=60)
    assert green.meta["energy"]["mean_clock_mhz"] == 1410
    assert green.meta["energy"]["energy_j"] == pytest.approx(base.meta["energy"]["energy_j"], rel=1e-6)


def test_fast_forward_and_stepping_account_the_same_joules() -> None:
    slo = "fixed:ttft=2,tpot=0.1,e2e=1000"
    ff, _ = _run(slo, "max", True, n=80)
    st, _ = _run(slo, "max", False, n=80)
    assert ff.meta["energy"]["energy_j"] == pytest.approx(st.meta["energy"]["energy_j"], rel=0.02)


def test_ecopred_predicts_held_out_shapes(cost: ClockedCost) -> None:
    pred = EcoPred.profiled(cost, seed=1)
    rng = np.random.default_rng(7)
    errs = []
    for _ in range(200):
        f = float(rng.choice(cost.power.ladder(8)))
        b = int(rng.integers(1, 300))
        s = BatchShape(decode_seqs=b, decode_ctx=b * int(rng.integers(100, 3000)))
        t = cost.evaluate(s, f).time_s
        errs.append(abs(pred.predict(s, f) - t) / t)
    assert float(np.mean(errs)) < 0.1


def test_ecofreq_lowers_the_clock_only_with_slack(cost: ClockedCost) -> None:
    fq = EcoFreq(cost.power, EcoPred.profiled(cost))
    s = BatchShape(decode_seqs=16, decode_ctx=16 * 1000)
    t = cost.evaluate(s, 1410).time_s
    assert fq.choose(cost, s, budget_s=t * 1.01) == 1410
    assert fq.choose(cost, s, budget_s=t * 10) < 1100


def test_ecoroute_avoids_a_staircase_step(cost: ClockedCost) -> None:
    fq = EcoFreq(cost.power, EcoPred.profiled(cost))
    r = EcoRoute({"d0": cost.at(0), "d1": cost.at(0)}, fq)
    spec = RequestSpec(0, 0.0, 500, 100, slo=SLO(tpot_s=0.06))
    at_step = InstanceLoad(0, "d0", "decode", running=256, kv_blocks_used=256 * 30, kv_blocks_total=100_000)
    below = InstanceLoad(1, "d1", "decode", running=250, kv_blocks_used=250 * 30, kv_blocks_total=100_000)
    assert r.route(spec, [at_step, below]) == 1
    below0 = InstanceLoad(0, "d1", "decode", running=250, kv_blocks_used=250 * 30, kv_blocks_total=100_000)
    step1 = InstanceLoad(1, "d0", "decode", running=256, kv_blocks_used=256 * 30, kv_blocks_total=100_000)
    assert r.route(spec, [below0, step1]) == 0  # not the position: the step
    assert r.stats["avoided_step"] == 2


def test_bad_mode_is_refused() -> None:
    with pytest.raises(LlmplanError, match="choose max"):
        EnergyControl(mode="turbo")
