"""EcoFreq on the real engine (tiny model, CPU): the hook, clock changes, and a refused lock.

No GPU here: clocks go to a recording setter (the NVML calls are NvmlReader's), and the cost
model is llama-3.1-8b on an A100 (what the engine would serve on a GPU), not the tiny model.
"""

from __future__ import annotations

import asyncio

import pytest

from llmplan.energy.live import LiveClockControl
from llmplan.energy.measure import NvmlReader
from llmplan.energy.power import ClockedCost
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine
from llmplan.runtime.sim.cluster import default_cost
from llmplan.workload.types import SLO


class Recorder:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[float | None, int]] = []
        self.refuse = refuse

    def set_locked_clocks(self, mhz: float | None, index: int = 0) -> tuple[bool, str]:
        self.calls.append((mhz, index))
        return (False, "GPU0: locking the SM clock was refused") if self.refuse else (True, "ok")


def _serve(control: LiveClockControl, slo: SLO) -> int:
    async def main() -> int:
        eng = build_engine(dummy_weights="llama-tiny", num_kv_blocks=64)
        eng.engine.clock_control = control
        await eng.start()
        sp = SamplingParams(max_tokens=6, ignore_eos=True)
        reqs = [GenerateRequest(f"r{i}", [5, 6, 7, 8] * 8, sp, slo=slo) for i in range(3)]

        async def one(r):
            return [o async for o in eng.generate(r)]

        outs = await asyncio.gather(*[one(r) for r in reqs])
        await eng.shutdown()
        return sum(len(o) for o in outs)

    return asyncio.run(main())


def _cost() -> ClockedCost:
    return ClockedCost.wrap(default_cost("llama-3.1-8b", "A100-SXM-80GB"))


def test_engine_lowers_the_clock_with_slack_and_learns_step_times() -> None:
    rec = Recorder()
    ctl = LiveClockControl(_cost(), rec)
    n0 = ctl.freq.pred.updates
    assert _serve(ctl, SLO(ttft_s=30.0, tpot_s=5.0)) > 0
    assert rec.calls and all(m is not None and m < 1410 for m, _ in rec.calls)
    assert ctl.freq.pred.updates > n0  # measured steps fed back to EcoPred
    ctl.close()
    assert rec.calls[-1] == (None, 0)


def test_tight_deadlines_keep_the_maximum_clock() -> None:
    rec = Recorder()
    ctl = LiveClockControl(_cost(), rec)
    _serve(ctl, SLO(ttft_s=1e-6, tpot_s=1e-6))
    assert rec.calls == [] and ctl.mhz == 1410


@pytest.mark.slow
def test_a_refused_lock_turns_control_off_and_says_so() -> None:
    rec = Recorder(refuse=True)
    ctl = LiveClockControl(_cost(), rec)
    _serve(ctl, SLO(ttft_s=30.0, tpot_s=5.0))
    assert len(rec.calls) == 1 and not ctl.enabled and "refused" in ctl.status
    nv = NvmlReader()
    if not nv.available:  # this machine: NVML itself refuses, with the reason
        ctl2 = LiveClockControl(_cost(), nv)
        _serve(ctl2, SLO(ttft_s=30.0, tpot_s=5.0))
        assert not ctl2.enabled and "cannot lock clocks" in ctl2.status


@pytest.mark.slow
def test_serve_clock_control_refuses_on_cpu_in_one_line() -> None:
    import subprocess
    import sys

    def serve(*args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    p = serve("--clock-control", "greenserve")
    assert p.returncode == 2 and "needs --device cuda" in p.stderr and "modelled only" in p.stderr
    assert "Traceback" not in p.stderr
    p = serve("--clock-control", "turbo", "--device", "cuda")
    assert p.returncode == 2 and "the only controller is greenserve" in p.stderr
