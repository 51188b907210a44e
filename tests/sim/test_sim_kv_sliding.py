"""The simulator's KV pool uses the planner's KV-size function: Gemma-2's sliding-window layers hold
at most the window per sequence in both (ModelSpec.range_kv_bytes_per_seq)."""

from __future__ import annotations

import pytest

from llmplan.models import get_model_spec
from llmplan.plan.costmodel import GIB, InstanceCost
from llmplan.plan.planner import make_plan
from llmplan.plan.types import PlanWorkload
from llmplan.runtime.sim.cluster import cluster_from_plan
from llmplan.topology import load_topology


def test_gemma2_sim_kv_pool_caps_sliding_layers_as_the_planner() -> None:
    spec = get_model_spec("gemma-2-27b")
    window, n = spec.sliding_window, spec.num_hidden_layers
    assert window == 4096 and spec.sliding_layers == n // 2  # every other layer slides
    G = load_topology("preset:dgx-h100")
    wl = PlanWorkload(max_batch=4, input_len=6000, output_len=2000)  # 8000 tokens > the window
    plan = make_plan(spec, G, "HE", workload=wl, tp_degrees=(1,))
    assert len(plan.instances[0].stages) == 1
    cost = InstanceCost.from_plan(plan, G)
    st = cost.stages[0]
    # hand computation: half the layers hold 8000 tokens, half hold the 4096-token window
    per_tok_layer = 2 * spec.num_key_value_heads * spec.head_dim * 2
    assert spec.kv_bytes_per_token_layer == per_tok_layer
    want = per_tok_layer * (n / 2 * 8000 + n / 2 * 4096) / 8000
    assert st.kv_bytes_per_token_per_gpu(spec, cost.seq_tokens) == pytest.approx(want, rel=1e-12)
    full = st.kv_bytes_per_token_per_gpu(spec)  # the old count: every layer every token
    assert full == n * per_tok_layer and want < 0.76 * full
    # the pool: free memory after weights over the capped per-token bytes
    free = st.gpus[0].usable_bytes(cost.params) - st.weight_bytes_per_gpu(spec)
    assert cost.kv_capacity_tokens() == int(free / want)
    # the planner's KV reserve for the stage is priced by the same function
    stage = plan.instances[0].stages[0]
    assert stage.kv_gib * GIB == pytest.approx(wl.max_batch * 8000 * want, rel=1e-3)
    # and the simulated cluster gets that pool
    blocks = cluster_from_plan(plan, G, block_size=16)[0].num_blocks
    assert blocks == int(free / want) // 16


def test_dense_full_attention_pool_is_unchanged_by_the_sequence_length() -> None:
    spec = get_model_spec("llama-3.1-8b")
    G = load_topology("preset:dgx-h100")
    plan = make_plan(spec, G, "HE", workload=PlanWorkload(max_batch=4, input_len=6000, output_len=2000))
    cost = InstanceCost.from_plan(plan, G)
    st = cost.stages[0]
    assert st.kv_bytes_per_token_per_gpu(spec, cost.seq_tokens) == pytest.approx(
        st.kv_bytes_per_token_per_gpu(spec), rel=1e-12
    )
