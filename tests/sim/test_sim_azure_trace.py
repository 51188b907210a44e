"""Conservation on the full Azure LLM inference trace (conv, 19,366 requests).

Needs the trace from ``LLMPLAN_DATA_DIR`` (CI: ``../shared/datasets``). Skipped, with the
reason, only when the file is absent outside CI; in CI (``CI=true``) its absence fails.
"""

from __future__ import annotations

import math
import os

import pytest

from llmplan.errors import DataNotFoundError
from llmplan.runtime.core.limits import context_rejection
from llmplan.runtime.sim import SimConfig, simulate
from llmplan.runtime.sim.cluster import model_context
from llmplan.workload import datafiles, load_workload


@pytest.fixture(scope="module")
def azure_conv():
    try:
        datafiles.resolve(datafiles.AZURE_FILES["azure-conv"], download=False, show_progress=False)
    except DataNotFoundError as e:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must have the Azure trace: {e}")
        pytest.skip(f"Azure conv trace absent (set LLMPLAN_DATA_DIR): {e}")
    return load_workload("azure-conv")


def _check_conservation(wl, res):
    assert len(res.records) == len(wl.requests)
    assert sorted(r.rid for r in res.records) == sorted(r.rid for r in wl.requests)
    by_rid = {r.rid: r for r in wl.requests}
    for rec in res.records:
        assert rec.status in ("ok", "rejected"), (rec.rid, rec.status, rec.reason)
        if rec.status == "rejected":
            assert rec.reason
            continue
        spec = by_rid[rec.rid]
        assert rec.output_tokens == spec.output_tokens
        times = [rec.arrival_s, rec.first_scheduled_s, rec.first_token_s, rec.finish_s]
        assert all(t is not None and math.isfinite(t) and t >= 0 for t in times), rec
        assert times == sorted(times), rec
        for v in (rec.queueing_s, rec.ttft_s, rec.e2e_s):
            assert v is not None and v >= 0
        if rec.tpot_s is not None:
            assert rec.tpot_s > 0


@pytest.mark.data
@pytest.mark.slow
def test_full_azure_conv_trace_every_request_accounted(azure_conv):
    assert len(azure_conv) == 19_366
    res = simulate(azure_conv, SimConfig(instances=8))  # llama-2-13b, one A100-80GB each
    _check_conservation(azure_conv, res)
    assert res.counters["completed"] + res.counters["rejected"] == 19_366
    assert res.counters["decode_tokens"] + res.counters["completed"] == sum(
        r.output_tokens for r in res.records if r.status == "ok"
    )
    assert all(0 <= s.busy_frac <= 1 and 0 <= s.kv_blocks_used <= s.kv_blocks_total for s in res.samples)


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("policy", ["s3", "slo-odbs-cb"])
def test_azure_conv_slice_under_memory_pressure_with_noisy_predictions(azure_conv, policy):
    # Ten times the arrival rate onto 2 instances with a small KV pool: heavy preemption, a
    # length-aware policy fed wrong lengths; still every request completes or is rejected.
    # TTFT targets put slo-odbs-cb's deadline tiers and aging to work.
    from llmplan.workload.types import SLO, RequestSpec, Workload

    head = azure_conv.requests[:1500]
    reqs = [RequestSpec(r.rid, r.arrival_s / 10, r.prompt_tokens, r.output_tokens,
                        slo=SLO(ttft_s=0.5 + 0.001 * r.prompt_tokens)) for r in head]
    reqs.append(RequestSpec(10**6, reqs[-1].arrival_s, 50_000, 10))  # a prompt no instance can hold
    wl = Workload("azure-slice", reqs)
    cfg = SimConfig(instances=2, num_blocks=600, policy=policy, predictor="noisy:0.5")
    res = simulate(wl, cfg)
    _check_conservation(wl, res)
    # Rejected are exactly the requests a server would refuse: beyond the model's context (the
    # 50k prompt among them; it is also more than 600 blocks * 16 tokens of KV).
    ctx = model_context(cfg)
    over = sum(context_rejection(r.prompt_tokens, r.output_tokens, ctx) is not None for r in reqs)
    assert over >= 2  # the slice holds real over-context requests besides the 50k prompt
    assert res.counters["rejected"] == over
    assert res.counters["preemptions"] > 0 and res.counters["mispredictions"] > 0
