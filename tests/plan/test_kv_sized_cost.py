"""Whether a cost sizes the KV cache is a declared protocol (KVSizedCost), not a getattr probe."""

from __future__ import annotations

import pytest

from llmplan.errors import LlmplanError
from llmplan.opcost.engines import canonical_engine
from llmplan.plan.costmodel import KVSizedCost
from llmplan.runtime.sim import LinearCost, SimConfig, default_cost, simulate
from llmplan.runtime.sim.cluster import kv_capacity_blocks
from llmplan.workload.types import RequestSpec, Workload


def test_the_planners_cost_sizes_kv_and_a_linear_cost_leaves_it_to_num_blocks():
    roofline = default_cost("llama-2-13b", "A100-SXM-80GB")
    assert isinstance(roofline, KVSizedCost)
    assert kv_capacity_blocks(roofline, 16) == roofline.kv_capacity_blocks(16) > 0
    assert not isinstance(LinearCost(), KVSizedCost)
    assert kv_capacity_blocks(LinearCost(), 16) is None
    wl = Workload("w", [RequestSpec(0, 0.0, 10, 2)])
    with pytest.raises(LlmplanError, match="does not size the KV cache; set SimConfig.num_blocks"):
        simulate(wl, SimConfig(cost=LinearCost()))
    assert simulate(wl, SimConfig(cost=LinearCost(), num_blocks=10)).records[0].status == "ok"


def test_serving_engines_resolve_through_the_registry_and_refuse_in_one_line():
    names = ("TensorRT-LLM", " vLLM ", "builtin")
    assert [canonical_engine(n) for n in names] == ["trtllm", "vllm", "llmplan"]
    with pytest.raises(LlmplanError, match=r"^--serving-engine 'tgi' is unknown; use one of llmplan\|vllm\|"):
        canonical_engine("tgi")
