"""`fill_plan` / `llmplan plan --fill`: greedy fill of a topology, exact per instance."""

from __future__ import annotations

import json

import pytest
from plan_helpers import make_graph
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import InfeasibleError, LlmplanError
from llmplan.models import get_model_spec
from llmplan.plan.planner import fill_plan, make_plan
from llmplan.plan.types import Plan
from llmplan.topology import gpu_nodes, load_topology

runner = CliRunner()
A100 = {"name": "A100-80GB", "memory_gib": 80.0, "bf16_tflops": 312.0, "hbm_gbps": 2039.0}
T4 = {"name": "T4", "memory_gib": 16.0, "bf16_tflops": 65.0, "hbm_gbps": 320.0}


def _replay_greedy(plan: Plan, spec, graph, mode: str, gpus: list[str]) -> None:
    """Each instance equals make_plan on the GPUs left before it (same stages, layers, costs)."""
    remaining = list(gpus)
    for inst in plan.instances:
        ref = make_plan(spec, graph, mode, gpus=remaining, topology=plan.topology)
        assert [(s.gpus, s.layer_start, s.layer_end) for s in inst.stages] == [
            (s.gpus, s.layer_start, s.layer_end) for s in ref.instances[0].stages
        ]
        assert [s.prefill_s for s in inst.stages] == [s.prefill_s for s in ref.instances[0].stages]
        remaining = [g for g in remaining if g not in inst.gpus]
    assert plan.metrics["unused_gpus"] == remaining


@pytest.mark.parametrize("mode", ["HE", "LR", "HELR"])
def test_dgx_a100_llama13b_fill_uses_every_gpu_with_disjoint_exact_instances(mode: str) -> None:
    graph = load_topology("preset:dgx-a100")
    spec = get_model_spec("llama-2-13b")
    plan = fill_plan(spec, graph, mode, topology="preset:dgx-a100")
    sets = [set(i.gpus) for i in plan.instances]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # disjoint
    assert set().union(*sets) == set(gpu_nodes(graph))  # 13B fits on one 80 GB A100: nothing idles
    assert plan.metrics["unused_gpus"] == [] and plan.num_gpus == 8
    assert len(plan.explanation) == len(plan.instances) + 1
    assert all(s.layers > 0 for i in plan.instances for s in i.stages)
    assert all(sum(s.layers for s in i.stages) == spec.num_hidden_layers for i in plan.instances)
    _replay_greedy(plan, spec, graph, mode, gpu_nodes(graph))
    if mode == "HE":  # fewest GPUs per instance: eight 1-GPU replicas
        assert [len(i.gpus) for i in plan.instances] == [1] * 8


def test_helr_fill_on_dgx_a100_is_not_two_copies_of_the_first_instance() -> None:
    graph = load_topology("preset:dgx-a100")
    plan = fill_plan(get_model_spec("llama-2-13b"), graph, "HELR")
    first = make_plan(get_model_spec("llama-2-13b"), graph, "HELR")
    assert plan.instances[0].gpus == first.instances[0].gpus
    assert len(plan.instances) > 8 // len(first.instances[0].gpus)  # more than whole copies would give


def test_infeasible_remainder_stops_with_a_reason_and_is_reported_unused() -> None:
    # 13B (~24 GiB fp16) fits one A100-80GB but not a 16 GiB T4, nor the T4 pair.
    graph = make_graph([A100, A100, T4, T4], {(0, 1): "NV12", (2, 3): "PIX"})
    spec = get_model_spec("llama-2-13b")
    plan = fill_plan(spec, graph, "HE")
    assert [i.gpus for i in plan.instances] == [["GPU0"], ["GPU1"]]
    assert plan.metrics["unused_gpus"] == ["GPU2", "GPU3"]
    assert "does not fit on the 2 GPU(s) left" in plan.metrics["stop_reason"]
    assert "stopped: llama-2-13b does not fit" in plan.explanation[0]
    _replay_greedy(plan, spec, graph, "HE", gpu_nodes(graph))


def test_nothing_fits_raises_the_planners_error() -> None:
    graph = make_graph([T4, T4], {(0, 1): "PIX"})
    with pytest.raises(InfeasibleError, match="needs"):
        fill_plan(get_model_spec("llama-2-70b"), graph, "HELR")


def test_max_instances_and_gpu_subset() -> None:
    graph = load_topology("preset:dgx-a100")
    spec = get_model_spec("llama-2-13b")
    plan = fill_plan(spec, graph, "HE", gpus=["GPU1", "GPU3", "GPU5"], max_instances=2)
    assert [i.gpus for i in plan.instances] == [["GPU1"], ["GPU3"]]
    assert plan.metrics["unused_gpus"] == ["GPU5"] and "max-instances 2" in plan.metrics["stop_reason"]
    with pytest.raises(InfeasibleError, match="max_instances"):
        fill_plan(spec, graph, "HE", max_instances=0)


def test_cli_fill_prints_every_instance_and_saves_a_multi_instance_plan(tmp_path) -> None:
    out = tmp_path / "fill.yaml"
    args = ["plan", "--model", "llama-2-13b", "--topology", "preset:dgx-a100", "--fill", "--out", str(out)]
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    saved = Plan.load(out)
    assert len(saved.instances) >= 3 and saved.metrics["fill"] is True
    for k in range(len(saved.instances)):
        assert f"instance {k} (" in r.output  # one table per instance
    assert "unused: none" in r.output
    r = runner.invoke(app, ["plan", "--plan", str(out), "--json"], catch_exceptions=False)
    d = json.loads(r.output)
    assert [i["stages"][0]["gpus"] for i in d["instances"]] == [i.stages[0].gpus for i in saved.instances]
    assert Plan.from_dict(d).to_dict() == saved.to_dict()


def test_cli_fill_rejects_pd_and_stray_max_instances() -> None:
    base = ["plan", "--model", "llama-2-13b", "--topology", "preset:dgx-a100"]
    with pytest.raises(LlmplanError, match="--fill and --pd"):
        runner.invoke(app, [*base, "--fill", "--pd"], catch_exceptions=False)
    with pytest.raises(LlmplanError, match="only applies with --fill"):
        runner.invoke(app, [*base, "--max-instances", "2"], catch_exceptions=False)


def test_multi_host_fill_goes_host_aligned_and_stays_fast() -> None:
    """64 H100s on 8 hosts, 70B: the remainder after the first instance is irregular (a host with
    one GPU taken); the fill plans that host's leftovers on their own, exactly, and never stalls."""
    import time

    graph = load_topology("preset:dgx-h100-x8")
    spec = get_model_spec("llama-2-70b")
    t0 = time.perf_counter()
    plan = fill_plan(spec, graph, "HELR")
    assert time.perf_counter() - t0 < 10.0
    sets = [set(i.gpus) for i in plan.instances]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    assert len(plan.instances) >= 8
    unused = plan.metrics["unused_gpus"]
    assert set().union(*sets) | set(unused) == set(gpu_nodes(graph))
    if unused:  # whatever is left cannot hold the model: the stop reason says so
        assert "does not fit on the" in plan.metrics["stop_reason"]
        with pytest.raises(InfeasibleError):
            make_plan(spec, graph, "HELR", gpus=unused)
    first = make_plan(spec, graph, "HELR")
    assert plan.instances[0].gpus == first.instances[0].gpus  # the first is planned on everything
    host1 = [
        g
        for g in gpu_nodes(graph)
        if graph.nodes[g]["host"] == graph.nodes[first.instances[0].gpus[-1]]["host"]
    ]
    leftover = [g for g in host1 if g not in first.instances[0].gpus]
    if leftover and len(first.instances[0].gpus) > len(host1):  # the first spilled over a host
        ref = make_plan(spec, graph, "HELR", gpus=leftover)
        assert plan.instances[1].gpus == ref.instances[0].gpus  # exact on that host's leftovers
        assert "planned on the" in plan.explanation[2]
    else:  # with NCCL-priced PP hops the first fills one host exactly and the next one starts a new host
        assert len({graph.nodes[g]["host"] for g in plan.instances[1].gpus}) == 1
