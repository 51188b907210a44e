"""The clock/power layer over the planner's cost model."""

from __future__ import annotations

import pytest

from llmplan.energy.power import (
    CLOCK_POWER,
    ClockedCost,
    PowerSample,
    clock_power_for,
    energy_optimal_mhz,
    fit_power,
)
from llmplan.errors import LlmplanError
from llmplan.plan.costmodel import BatchShape
from llmplan.runtime.sim.cluster import default_cost
from llmplan.topology.specs import GPU_SPECS

PREFILL = BatchShape(prefill_tokens=2048, prefill_attn=2048 * 1024)


@pytest.fixture(scope="module")
def a100() -> ClockedCost:
    return ClockedCost.wrap(default_cost("llama-3.1-8b", "A100-SXM-80GB"))


def test_every_spec_gpu_has_cited_parameters() -> None:
    assert set(GPU_SPECS) <= set(CLOCK_POWER)
    for name, cp in CLOCK_POWER.items():
        assert cp.source, name
        assert cp.f_min_mhz < cp.f_max_mhz
        assert 0 < cp.idle_w < cp.static_w < cp.tdp_w
        assert cp.static_w + cp.dyn_w == pytest.approx(cp.tdp_w)
        assert GPU_SPECS[name].tdp_w == cp.tdp_w, name  # one TDP per GPU in the project


def test_prefill_scales_with_clock_decode_barely(a100: ClockedCost) -> None:
    dec = BatchShape(decode_seqs=8, decode_ctx=8000)
    slow_p = a100.evaluate(PREFILL, 705).time_s / a100.evaluate(PREFILL, 1410).time_s
    slow_d = a100.evaluate(dec, 705).time_s / a100.evaluate(dec, 1410).time_s
    assert slow_p > 1.8  # compute-bound: ~2x at half the clock
    assert 1.0 < slow_d < 1.4  # memory-bound: a little


def test_max_clock_equals_the_base_model(a100: ClockedCost) -> None:
    for shape in (PREFILL, BatchShape(decode_seqs=64, decode_ctx=64 * 700)):
        assert a100.evaluate(shape, 1410).time_s == pytest.approx(a100.base.iteration_time(shape))
        assert a100.iteration_time(shape) == a100.base.iteration_time(shape)


def test_energy_is_u_shaped_with_an_interior_optimum(a100: ClockedCost) -> None:
    f, e = energy_optimal_mhz(a100, [PREFILL])
    assert 800 <= f <= 1200  # GreenServe reports ~1005 MHz on an A100
    assert a100.evaluate(PREFILL, 300).energy_j > e
    assert a100.evaluate(PREFILL, 1410).energy_j > e


def test_staircase_at_a_tile_boundary_shows_at_low_clock(a100: ClockedCost) -> None:
    t = {b: a100.evaluate(BatchShape(decode_seqs=b, decode_ctx=b * 500), 600).time_s for b in (255, 256, 257)}
    assert t[257] - t[256] > 5 * (t[256] - t[255])


def test_unknown_gpu_is_refused() -> None:
    with pytest.raises(LlmplanError, match="no power/clock parameters"):
        clock_power_for("Some Imaginary Accelerator 9000")


def test_fit_recovers_parameters_from_samples() -> None:
    true = CLOCK_POWER["A100-SXM-80GB"]
    samples = [
        PowerSample(f, u, true.power_w(f / true.f_max_mhz, u) * (1 + 0.01 * ((i % 3) - 1)))
        for i, (f, u) in enumerate((f, u) for f in (600, 900, 1200, 1410) for u in (0.3, 0.6, 1.0))
    ]
    start = CLOCK_POWER["A100-SXM-40GB"]  # different static/dyn
    fitted, rms = fit_power(start, samples)
    assert fitted.static_w == pytest.approx(true.static_w, rel=0.1)
    assert fitted.alpha == pytest.approx(true.alpha, abs=0.3)
    assert rms < 5
    with pytest.raises(LlmplanError, match="two or more SM clocks"):
        fit_power(start, [PowerSample(1410, 1.0, 390)] * 5)
