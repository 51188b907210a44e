"""HELR exactness: the frontier solver against brute force (presets, random beds) and CP-SAT (16 GPUs)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_helpers import make_graph

from llmplan.models import get_model_spec
from llmplan.plan.cpsat import solve_cpsat
from llmplan.plan.helr import choose, frontier, twin_classes
from llmplan.plan.planner import feasible
from llmplan.plan.problem import problem_from_graph
from llmplan.plan.reference import brute_force_frontier
from llmplan.plan.types import PlanWorkload
from llmplan.topology import load_topology

SMALL_PRESETS = ["4x-rtx3090", "2x-rtx4090", "dgx-h100", "dgx-a100", "8x-a100-pcie", "hetero-a100-l40s"]


def _same_frontier(fast: dict, ref: dict) -> None:
    assert fast.keys() == ref.keys()
    for s in ref:
        assert fast[s].latency == pytest.approx(ref[s].latency, rel=1e-9, abs=1e-12), s


def _squeezed(spec_name: str, layers: int, memory_scale: float):
    """A catalog model cut to a few layers, on GPUs shrunk so that memory caps bind."""
    return dataclasses.replace(get_model_spec(spec_name), num_hidden_layers=layers), memory_scale


@pytest.mark.parametrize("preset", SMALL_PRESETS)
def test_frontier_equals_brute_force_on_every_small_preset(preset: str) -> None:
    G = load_topology(f"preset:{preset}")
    spec = dataclasses.replace(get_model_spec("llama-2-13b"), num_hidden_layers=5)
    # Shrink memory so that 1-2 layers fit per GPU: the caps bind and several GPUs are needed.
    for n in G.nodes:
        if G.nodes[n].get("kind") == "gpu":
            G.nodes[n]["memory_gib"] = 3.2 + 0.5 * (G.nodes[n]["index"] % 3)
    pr = problem_from_graph(spec, G, PlanWorkload(max_batch=8, input_len=256, output_len=64))
    fast = frontier(pr)
    assert fast, "the squeezed instance should still be feasible"
    assert min(fast) >= 2, "memory caps should bind"
    _same_frontier(fast, brute_force_frontier(pr))


def test_frontier_equals_brute_force_chatglm_on_4x3090_unsqueezed() -> None:
    G = load_topology("preset:4x-rtx3090")
    spec = dataclasses.replace(get_model_spec("chatglm2-6b"), num_hidden_layers=10)
    pr = problem_from_graph(spec, G, PlanWorkload(max_batch=16, input_len=512, output_len=128))
    _same_frontier(frontier(pr), brute_force_frontier(pr))


@st.composite
def random_bed(draw):
    n = draw(st.integers(1, 6))
    kinds = list(("NV12", "PIX", "NODE", "SYS"))
    gpus = [
        {
            "memory_gib": draw(st.sampled_from([2.5, 3.0, 4.0, 6.0, 24.0])),
            "bf16_tflops": draw(st.sampled_from([50.0, 71.0, 142.0, 312.0])),
            "hbm_gbps": draw(st.sampled_from([500.0, 936.0, 2000.0])),
        }
        for _ in range(n)
    ]
    links = {(i, j): draw(st.sampled_from(kinds)) for i in range(n) for j in range(i + 1, n)}
    layers = draw(st.integers(1, 5))
    wl = PlanWorkload(
        max_batch=draw(st.sampled_from([1, 4, 16])),
        input_len=draw(st.sampled_from([64, 512, 2048])),
        output_len=draw(st.sampled_from([16, 256])),
    )
    model = draw(st.sampled_from(["llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "opt-13b"]))
    return gpus, links, layers, wl, model


@settings(max_examples=220, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_bed())
@pytest.mark.slow
def test_frontier_equals_brute_force_on_random_beds(bed) -> None:
    gpus, links, layers, wl, model = bed
    spec = dataclasses.replace(get_model_spec(model), num_hidden_layers=layers)
    pr = problem_from_graph(spec, make_graph(gpus, links), wl)
    fast = frontier(pr)
    _same_frontier(fast, brute_force_frontier(pr))
    assert feasible(pr) == bool(fast)  # the O(n^2) test behind the "lower --max-batch" hint
    if fast:  # each mode's pick is the argmin of its objective over all feasible plans
        he, lr = choose(fast, "HE"), choose(fast, "LR")
        assert he.gpus == min(fast) and lr.latency == min(p.latency for p in fast.values())


def test_twin_classes_follow_the_topology() -> None:
    spec = get_model_spec("llama-2-7b")
    assert len(twin_classes(problem_from_graph(spec, load_topology("preset:dgx-h100")))) == 1
    # power caps make every 3090 distinct
    assert len(twin_classes(problem_from_graph(spec, load_topology("preset:4x-rtx3090")))) == 4
    x8 = problem_from_graph(spec, load_topology("preset:dgx-h100-x8"))
    assert sorted(len(c) for c in twin_classes(x8)) == [8] * 8


def _two_hosts_16() -> tuple:
    G = load_topology("preset:dgx-h100-x8")
    nodes = [f"GPU{i}" for i in range(16)]
    spec = dataclasses.replace(get_model_spec("llama-2-13b"), num_hidden_layers=8)
    return problem_from_graph(spec, G, PlanWorkload(max_batch=64, input_len=1024, output_len=256), gpus=nodes)


def test_identical_hosts_shortcut_equals_the_generic_dp() -> None:
    pr = _two_hosts_16()
    _same_frontier(frontier(pr, use_host_structure=True), frontier(pr, use_host_structure=False))


def _hetero_16():
    """16 GPUs in 4 groups (power caps, memory) with PIX pairs, NODE within a socket, SYS across."""
    gpus, links = [], {}
    for i in range(16):
        gpus.append(
            {
                "memory_gib": [3.5, 4.0, 6.0, 8.0][i // 4],
                "bf16_tflops": [71.0, 60.0, 50.0, 40.0][i // 4],
                "hbm_gbps": 936.0,
            }
        )
    for i in range(16):
        for j in range(i + 1, 16):
            links[(i, j)] = "PIX" if i // 2 == j // 2 else ("NODE" if i // 8 == j // 8 else "SYS")
    spec = dataclasses.replace(get_model_spec("llama-2-7b"), num_hidden_layers=6)
    return problem_from_graph(
        spec, make_graph(gpus, links), PlanWorkload(max_batch=16, input_len=512, output_len=64)
    )


@pytest.mark.parametrize("which,sizes", [("hosts", (1, 2, 3)), ("hetero", (1, 2))])
def test_frontier_equals_cpsat_on_16_gpus(which: str, sizes: tuple[int, ...]) -> None:
    pr = _two_hosts_16() if which == "hosts" else _hetero_16()
    fast = frontier(pr)
    for s in sizes:
        res = solve_cpsat(pr, num_gpus=s, time_limit_s=30)
        assert res.optimal and res.placement is not None
        # Same optimum up to CP-SAT's integer rounding (1e-7 s per term).
        assert fast[s].latency == pytest.approx(res.placement.latency, abs=1e-5)
        assert fast[s].latency <= res.placement.latency + 1e-12
        assert res.bound_s <= fast[s].latency + 1e-5


@pytest.mark.parametrize("preset", ["dgx-h100-x8", "dgx-h100-x32", "dgx-h100-x64"])
def test_multinode_presets_against_brute_force_on_a_two_host_slice(preset: str) -> None:
    """Brute force cannot enumerate 64-512 GPUs; a 3+3 slice of two hosts keeps the NET links."""
    G = load_topology(f"preset:{preset}")
    hosts: dict[str, list[str]] = {}
    for n, a in G.nodes(data=True):
        if a.get("kind") == "gpu":
            hosts.setdefault(a["host"], []).append(n)
    first, second = (sorted(v, key=lambda n: G.nodes[n]["index"]) for v in list(hosts.values())[:2])
    nodes = first[:3] + second[:3]
    assert G.edges[nodes[0], nodes[3]]["link"] != G.edges[nodes[0], nodes[1]]["link"]
    for n in nodes:
        G.nodes[n]["memory_gib"] = 3.6
    spec = dataclasses.replace(get_model_spec("llama-2-13b"), num_hidden_layers=5)
    pr = problem_from_graph(spec, G, PlanWorkload(max_batch=8, input_len=512, output_len=64), gpus=nodes)
    fast = frontier(pr)
    assert max(fast) > 3, "the slice should need GPUs on both hosts"
    _same_frontier(fast, brute_force_frontier(pr))
    _same_frontier(frontier(pr, use_host_structure=False), fast)


# ---- tensor x pipeline parallelism: the joint frontier -----------------------------------------


@st.composite
def random_tp_bed(draw):
    """1-3 hosts of up to 4 GPUs (<= 6 in all): one GPU type per host (sometimes one odd GPU),
    one intra-host link kind per host, SYS/NET across hosts, so TP groups exist and vary."""
    hosts = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).filter(lambda h: sum(h) <= 6))
    gpus, host_of = [], []
    for h, size in enumerate(hosts):
        base = {
            "memory_gib": draw(st.sampled_from([2.0, 2.5, 3.0, 4.0, 24.0])),
            "bf16_tflops": draw(st.sampled_from([71.0, 142.0, 312.0])),
            "hbm_gbps": draw(st.sampled_from([936.0, 2000.0])),
            "host": f"node{h}",
        }
        odd = draw(st.integers(-1, size - 1))
        for k in range(size):
            g = dict(base)
            if k == odd and size > 2:
                g["memory_gib"] = g["memory_gib"] + 1.0
            gpus.append(g)
            host_of.append(h)
    intra = [draw(st.sampled_from(["NV12", "PIX"])) for _ in hosts]
    cross = draw(st.sampled_from(["SYS", "NET"]))
    links = {}
    for i in range(len(gpus)):
        for j in range(i + 1, len(gpus)):
            links[(i, j)] = intra[host_of[i]] if host_of[i] == host_of[j] else cross
    wl = PlanWorkload(
        max_batch=draw(st.sampled_from([1, 8, 32])),
        input_len=draw(st.sampled_from([128, 1024])),
        output_len=draw(st.sampled_from([16, 256])),
    )
    layers = draw(st.integers(1, 5))
    model = draw(st.sampled_from(["llama-2-7b", "llama-3.1-8b", "opt-13b", "qwen2.5-7b"]))
    return gpus, links, layers, wl, model


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_tp_bed())
def test_joint_tp_pp_frontier_equals_brute_force_on_random_beds(bed) -> None:
    from llmplan.plan.planner import joint_frontier
    from llmplan.plan.reference import brute_force_joint_frontier

    gpus, links, layers, wl, model = bed
    spec = dataclasses.replace(get_model_spec(model), num_hidden_layers=layers)
    base = problem_from_graph(spec, make_graph(gpus, links), wl)
    fast = joint_frontier(base, (1, 2, 4))
    ref = brute_force_joint_frontier(base, (1, 2, 4))
    assert fast.keys() == ref.keys()
    for g in ref:
        assert fast[g].latency == pytest.approx(ref[g], rel=1e-9, abs=1e-12), g


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_group_frontier_equals_cpsat_on_16_gpus(tp: int) -> None:
    from llmplan.plan.problem import tp_group_problem

    base = _two_hosts_16()
    pr = tp_group_problem(base, tp)
    assert pr is not None and len(pr.gpus) == 16 // tp
    fast = frontier(pr)
    assert len(fast) >= 3
    assert min(fast) == 1
    for s in sorted(fast)[:3]:  # one stage included (beta's domain once cut one-stage plans off)
        res = solve_cpsat(pr, num_gpus=s, time_limit_s=30)
        assert res.optimal and res.placement is not None
        assert fast[s].latency == pytest.approx(res.placement.latency, abs=1e-5)
        assert fast[s].latency <= res.placement.latency + 1e-12


def _small_moe(layers: int, fp8: bool):
    """Qwen3-MoE's layer kinds shrunk: 8 experts, top-2, 256-wide (fp8: TP 4 slices are 64 wide,
    so TP 4 exists only as EP; TP 2 has both)."""
    s = dataclasses.replace(
        get_model_spec("qwen3-30b-a3b"),
        num_hidden_layers=layers,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=256,
    )
    return s.with_precision("fp8") if fp8 else s


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(random_tp_bed(), st.booleans(), st.sampled_from(["roofline", "ops"]))
def test_joint_frontier_with_expert_parallelism_equals_brute_force(bed, fp8: bool, cost_model: str) -> None:
    """MoE: the joint frontier over TP degree x (TP-sharded experts | EP) x pipeline equals brute force."""
    from llmplan.plan.costmodel import CostParams
    from llmplan.plan.planner import joint_frontier
    from llmplan.plan.reference import brute_force_joint_frontier

    gpus, links, layers, wl, _ = bed
    spec = _small_moe(layers, fp8)
    base = problem_from_graph(spec, make_graph(gpus, links), wl, CostParams(cost_model=cost_model))
    fast = joint_frontier(base, (1, 2, 4))
    ref = brute_force_joint_frontier(base, (1, 2, 4))
    assert fast.keys() == ref.keys()
    for g in ref:
        assert fast[g].latency == pytest.approx(ref[g], rel=1e-9, abs=1e-12), g


def test_ep_is_on_the_joint_frontier_of_a_small_moe_bed() -> None:
    """A case the random beds cover, pinned: 4 NVLinked GPUs, where EP is on the frontier both
    where it is the only way (fp8, TP 4) and where it beats TP-sharded experts (bf16, TP 4)."""
    from llmplan.plan.costmodel import CostParams
    from llmplan.plan.planner import joint_frontier
    from llmplan.plan.problem import tp_group_problem
    from llmplan.plan.reference import brute_force_joint_frontier

    gpus = [{"memory_gib": 3.0, "bf16_tflops": 312.0, "hbm_gbps": 2000.0, "host": "n0"} for _ in range(4)]
    links = {(i, j): "NV12" for i in range(4) for j in range(i + 1, 4)}
    wl = PlanWorkload(max_batch=8, input_len=2048, output_len=128)
    for fp8 in (True, False):
        base = problem_from_graph(
            _small_moe(4, fp8), make_graph(gpus, links), wl, CostParams(cost_model="roofline")
        )
        fast = joint_frontier(base, (1, 2, 4))
        assert fast[4].tp == 4 and fast[4].problem.expert_parallel, fp8
        tp_experts = tp_group_problem(base, 4, False)
        if fp8:
            assert tp_experts is None  # 256 / 4 = 64: not whole fp8 128-blocks
        else:
            assert frontier(tp_experts)[1].latency > fast[4].latency
        ref = brute_force_joint_frontier(base, (1, 2, 4))
        assert {g: c.latency for g, c in fast.items()} == pytest.approx(ref, rel=1e-9)
