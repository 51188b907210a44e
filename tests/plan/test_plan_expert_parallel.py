"""Expert parallelism: the dispatch + combine all-to-all priced from the group's links (against a hand
computation), per-GPU expert weights, the planner choosing between TP-sharded experts and EP, the
vLLM flag, and the simulator pricing an EP plan as the planner does."""

from __future__ import annotations

import dataclasses

import pytest

from llmplan.models import get_model_spec
from llmplan.opcost.collectives import CollectiveParams
from llmplan.opcost.collectives import alltoall_coefficients as nccl_alltoall
from llmplan.plan.costmodel import (
    CostParams,
    InstanceCost,
    LinkPerf,
    alltoall_coefficients,
    layer_weight_bytes_per_gpu,
    tp_comm_time,
)
from llmplan.plan.helr import frontier
from llmplan.plan.planner import joint_frontier, make_plan
from llmplan.plan.problem import expert_modes, problem_from_graph, tp_group_problem
from llmplan.plan.types import PlanWorkload
from llmplan.plan.vllm import vllm_command
from llmplan.topology import load_topology

ROOF = CostParams(cost_model="roofline")
NV = LinkPerf(450e9, 3e-6, "NV18")


def test_ep_alltoall_against_a_hand_computation() -> None:
    s = get_model_spec("qwen3-30b-a3b")  # published: hidden 2048, top-8 of 128 experts, 48 MoE layers
    assert (s.hidden_size, s.num_experts_per_tok, s.moe_layers, s.num_hidden_layers) == (2048, 8, 48, 48)
    tokens, n, bw, lat, eff = 64, 8, 450e9, 3e-6, ROOF.link_eff
    act = tokens * 2048 * 2  # bf16 hidden states
    allreduce = 2 * 7 * lat + 2 * 7 / 8 * act / (bw * eff)
    # each GPU dispatches its 1/8 of the tokens to their 8 experts each; 7/8 of that leaves the GPU
    a2a = 7 * lat + 7 / 8 * (act / 8) * 8 / (bw * eff)
    # an MoE layer under EP: attention all-reduce + dispatch + combine
    assert tp_comm_time(s, tokens, n, NV, ROOF, ep=True) == pytest.approx(allreduce + 2 * a2a, rel=1e-12)
    assert tp_comm_time(s, tokens, n, NV, ROOF, ep=False) == pytest.approx(2 * allreduce, rel=1e-12)
    # DeepSeek-V3: 3 of 61 layers are dense and keep both all-reduces
    d = get_model_spec("deepseek-v3")
    act = tokens * 7168 * 2
    ar = 2 * 7 * lat + 2 * 7 / 8 * act / (bw * eff)
    a2a = 7 * lat + 7 / 8 * (act / 8) * 8 / (bw * eff)
    want = (3 * 2 * ar + 58 * (ar + 2 * a2a)) / 61
    assert tp_comm_time(d, tokens, n, NV, ROOF, ep=True) == pytest.approx(want, rel=1e-12)
    # the NCCL-fitted variant: the all-reduce's launch/per-rank constants, n-1 link latencies
    cp = CollectiveParams(10e-6, 2e-6, 0.7, 5e-6, 0.8)
    c0, c1 = nccl_alltoall(4, NV, cp)
    assert c0 == pytest.approx(10e-6 + 3 * 2e-6 + 3 * lat) and c1 == pytest.approx(3 / 4 / (bw * 0.7))
    assert alltoall_coefficients(1, NV, ROOF) == (0.0, 0.0)


def test_ep_weights_per_gpu_are_routed_over_ep_plus_shared() -> None:
    d = get_model_spec("deepseek-v3").with_precision("fp8")
    shared = d.shared_expert_params * d.weight_param_bytes
    assert shared > 0
    tp8 = layer_weight_bytes_per_gpu(d, 8, ep=False)
    ep8 = layer_weight_bytes_per_gpu(d, 8, ep=True)
    assert tp8 == pytest.approx(d.moe_layer_weight_bytes / 8)
    assert ep8 == pytest.approx((d.moe_layer_weight_bytes - shared) / 8 + shared)
    routed = d.num_experts * d.expert_params * d.weight_param_bytes
    assert ep8 - shared < d.moe_layer_weight_bytes / 8 and ep8 > routed / 8
    # dense layers (first 3) and models without shared experts are unchanged by EP
    assert layer_weight_bytes_per_gpu(d, 8, True, moe=False) == pytest.approx(d.dense_layer_weight_bytes / 8)
    m = get_model_spec("mixtral-8x7b")
    assert layer_weight_bytes_per_gpu(m, 4, True) == pytest.approx(layer_weight_bytes_per_gpu(m, 4, False))


def test_expert_modes_follow_what_vllm_can_shard() -> None:
    q = get_model_spec("qwen3-235b-a22b").with_precision("fp8")  # moe_intermediate 1536, 128 experts
    assert expert_modes(q, 2) == (False, True) and expert_modes(q, 4) == (False, True)
    assert expert_modes(q, 8) == (True,)  # 1536 / 8 = 192: not whole 128-blocks
    assert expert_modes(get_model_spec("mixtral-8x7b"), 8) == (False, True)
    assert expert_modes(get_model_spec("llama-3.1-8b"), 8) == (False,)
    odd = dataclasses.replace(q, num_experts=12)
    assert expert_modes(odd, 8) == ()  # neither: refused at TP 8


def test_planner_chooses_between_tp_experts_and_ep_by_price() -> None:
    """Where both are valid the joint frontier is the min over both, and the vLLM line says
    --enable-expert-parallel exactly when the chosen plan uses EP."""
    G = load_topology("preset:dgx-h100")
    wl = PlanWorkload(max_batch=16, input_len=1024, output_len=128)
    m = get_model_spec("mixtral-8x7b")  # top-2 of 8, no shared experts: EP moves 2/n of the bytes
    base = problem_from_graph(m, G, wl, ROOF)
    front = joint_frontier(base)
    for t in (2, 4, 8):
        tp_f, ep_f = frontier(tp_group_problem(base, t, False)), frontier(tp_group_problem(base, t, True))
        assert set(tp_f) == set(ep_f)
        for s in tp_f:
            assert front[s * t].latency <= min(tp_f[s].latency, ep_f[s].latency) * (1 + 1e-12)
            if t == 2:  # 2 all-to-alls of 2 * T/2 tokens x 1/2 = one all-reduce of T x 2 * 1/2: a tie
                assert ep_f[s].latency == pytest.approx(tp_f[s].latency, rel=1e-12)
            else:  # k < n: dispatch + combine move less than the all-reduce, same 2(n-1) latencies
                assert ep_f[s].latency < tp_f[s].latency
    assert front[2].tp == 2 and not front[2].problem.expert_parallel  # ties keep TP
    assert front[8].problem.expert_parallel and front[8].tp == 8  # EP on the frontier
    lr = make_plan(m, G, "LR", workload=wl, params=ROOF)
    assert lr.metrics["expert_parallel"] and "--enable-expert-parallel" in vllm_command(lr)[0]
    # with NCCL's fitted launch cost (two more collectives per MoE layer) TP experts win instead
    ops = make_plan(m, G, "LR", workload=wl, params=CostParams(cost_model="ops"))
    assert ops.metrics["tp"] == 8 and not ops.metrics["expert_parallel"]
    assert "--enable-expert-parallel" not in vllm_command(ops)[0]

    q = get_model_spec("qwen3-235b-a22b").with_precision("fp8")
    qf = joint_frontier(problem_from_graph(q, G, wl, ROOF))
    assert qf[8].problem.expert_parallel and qf[8].tp == 8  # TP 8 exists only as EP (192-wide slices)
    he = make_plan(q, G, "HE", workload=wl, params=ROOF)
    assert he.metrics["tp"] == 4 and not he.metrics["expert_parallel"]
    assert "--enable-expert-parallel" not in vllm_command(he)[0]


@pytest.mark.parametrize("model,wdt,ep", [("qwen3-235b-a22b", "fp8", True), ("llama-3.1-70b", None, False)])
def test_simulator_prices_the_planned_tp_or_ep_instance_as_the_planner(model: str, wdt, ep: bool) -> None:
    G = load_topology("preset:dgx-h100")
    spec = get_model_spec(model)
    if wdt:
        spec = spec.with_precision(wdt)
    wl = PlanWorkload(max_batch=16, input_len=1024, output_len=128)
    plan = make_plan(spec, G, "LR", workload=wl, params=ROOF)
    assert plan.metrics["expert_parallel"] is ep and plan.metrics["tp"] == 8 and plan.metrics["pp"] == 1
    cost = InstanceCost.from_plan(plan, G)
    assert cost.stages[0].ep is ep
    assert cost.prefill_time(wl.input_len) == pytest.approx(plan.metrics["ttft_s"], rel=1e-9)
    st = plan.instances[0].stages[0]
    assert cost.stages[0].weight_bytes_per_gpu(cost.spec) / 2**30 == pytest.approx(st.weights_gib, abs=1e-3)


@pytest.mark.parametrize(
    "model,tp,ep", [("deepseek-v3", 8, False), ("deepseek-v3", 8, True), ("deepseek-v2-lite", 1, False)]
)
def test_first_stage_caps_price_the_dense_layers_it_holds(model: str, tp: int, ep: bool) -> None:
    """The first stage holds layers [0, c): its cap counts DeepSeek's first-k dense layers at their
    own size (the exact bytes of memory_breakdown), not as MoE layers."""
    import numpy as np

    from llmplan.plan.costmodel import GIB, GpuPerf, _kv_split, range_weight_bytes_per_gpu
    from llmplan.plan.problem import FIRST, MIDDLE, ONLY, build_problem, kv_reserve_per_layer

    spec = get_model_spec(model)
    if model == "deepseek-v3":
        spec = spec.with_precision("fp8")
    wl = PlanWorkload(max_batch=8, input_len=1024, output_len=256)
    kv = kv_reserve_per_layer(spec, wl) / _kv_split(spec, tp)
    layer_gib = (
        range_weight_bytes_per_gpu(spec, spec.num_hidden_layers - 1, spec.num_hidden_layers, tp, ep) / GIB
    )
    for mem in np.linspace(layer_gib * 4, layer_gib * (spec.num_hidden_layers + 6), 23):
        g = GpuPerf("x", 1e15, 3e12, float(mem) * GIB)
        pb = build_problem(spec, [("g0", g)], np.full((1, 1), -1), [], wl, tp=tp, ep=ep)
        usable = g.usable_bytes(pb.params)
        for role in (FIRST, ONLY):
            extra = (spec.embed_weight_bytes + (spec.head_weight_bytes if role == ONLY else 0)) / tp
            fits = [
                c
                for c in range(spec.num_hidden_layers + 1)
                if range_weight_bytes_per_gpu(spec, 0, c, tp, ep) + c * kv + extra <= usable * (1 + 1e-12)
            ]
            want = max(fits) if fits else 0
            assert min(pb.gpus[0].caps[role], spec.num_hidden_layers) == min(want, spec.num_hidden_layers)
        # the middle stage (past the dense layers) stays priced as MoE layers
        assert pb.gpus[0].caps[MIDDLE] == max(
            0, int(usable // (range_weight_bytes_per_gpu(spec, 5, 6, tp, ep) + kv))
        )
    # where it matters: the old cap priced every layer as an MoE layer
    big = range_weight_bytes_per_gpu(spec, 5, 6, tp, ep) + kv
    g = GpuPerf("x", 1e15, 3e12, 12 * layer_gib * GIB)
    pb = build_problem(spec, [("g0", g)], np.full((1, 1), -1), [], wl, tp=tp, ep=ep)
    old = int((g.usable_bytes(pb.params) - spec.embed_weight_bytes / tp) // big)
    assert pb.gpus[0].caps[FIRST] > old
