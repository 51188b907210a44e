"""Building the simulated cluster: instances from a count, from a Plan, or the CLI default."""

from __future__ import annotations

from typing import Any

from llmplan.errors import LlmplanError
from llmplan.plan.costmodel import IterationCost, KVSizedCost
from llmplan.runtime.sim.config import InstanceSpec, SimConfig


def default_cost(model: str, gpu: str, tp: int = 1, params: Any = None) -> Any:
    """The planner's cost model for ``model`` on ``tp`` identical ``gpu``s (one instance);
    ``params`` (``CostParams``, e.g. one serving engine's) default to the planner's."""
    from llmplan.models import get_model_spec
    from llmplan.plan.costmodel import DEFAULT_PARAMS, GIB, GpuPerf, InstanceCost
    from llmplan.topology.specs import spec_for

    g = spec_for(gpu)
    perf = GpuPerf(g.model, g.bf16_tflops * 1e12, g.hbm_gbps * 1e9, g.memory_gib * GIB)
    return InstanceCost.single(get_model_spec(model), perf, tp=tp, params=params or DEFAULT_PARAMS)


def model_context(config: SimConfig) -> int | None:
    """The longest sequence (prompt + output) the simulated server accepts: ``max_model_len``
    when set, else the model's context (``max_position_embeddings`` of its catalog spec), as
    ``llmplan serve`` does; each instance further caps it at its KV pool. None (KV pool only)
    for a model outside the catalog."""
    from llmplan.models import get_model_spec

    try:
        ctx = int(get_model_spec(config.model).max_position_embeddings)
    except LlmplanError:
        ctx = None
    if config.max_model_len is not None:
        if config.max_model_len < 2:
            raise LlmplanError(f"max_model_len must be >= 2 (got {config.max_model_len})")
        return config.max_model_len if ctx is None else min(config.max_model_len, ctx)
    return ctx


def kv_capacity_blocks(cost: IterationCost, block_size: int) -> int | None:
    """The KV blocks ``cost`` sizes (a :class:`KVSizedCost`), or None when it does not size them."""
    return int(cost.kv_capacity_blocks(block_size)) if isinstance(cost, KVSizedCost) else None


def build_instances(config: SimConfig) -> list[InstanceSpec]:
    """The instance list a config describes (see :class:`SimConfig`)."""
    if not isinstance(config.instances, int):
        specs = list(config.instances)
        if not specs:
            raise LlmplanError("SimConfig.instances is an empty list; give at least one InstanceSpec")
        roles = [s.role for s in specs]
        names = [s.name for s in specs]
        if config.disaggregation is not None:
            n_p, n_d = _check_pd(config.disaggregation, len(specs))
            roles = ["prefill"] * n_p + ["decode"] * n_d
            names = [f"p{k}" for k in range(n_p)] + [f"d{k}" for k in range(n_d)]
        return [
            InstanceSpec(
                names[k],
                config.cost if config.cost is not None else s.cost,
                config.num_blocks if config.num_blocks is not None else s.num_blocks,
                roles[k],
                s.gpus,
            )
            for k, s in enumerate(specs)
        ]
    n = config.instances
    if n < 1:
        raise LlmplanError(f"SimConfig.instances must be >= 1 (got {n})")
    cost = config.cost if config.cost is not None else default_cost(config.model, config.gpu, config.tp)
    blocks = config.num_blocks
    if blocks is None:
        blocks = kv_capacity_blocks(cost, config.block_size)
        if blocks is None:
            raise LlmplanError(
                f"cost {type(cost).__name__} does not size the KV cache; set SimConfig.num_blocks"
            )
    if blocks <= 0:
        raise LlmplanError(
            f"{config.model} leaves no KV memory on {config.tp}x {config.gpu}; use more GPUs (tp) or a "
            "bigger GPU"
        )
    roles = ["both"] * n
    names = [f"i{k}" for k in range(n)]
    if config.disaggregation is not None:
        n_p, n_d = _check_pd(config.disaggregation, n if n != 1 else None)
        roles = ["prefill"] * n_p + ["decode"] * n_d
        names = [f"p{k}" for k in range(n_p)] + [f"d{k}" for k in range(n_d)]
    return [InstanceSpec(names[k], cost, blocks, roles[k]) for k in range(len(roles))]


def _check_pd(pd: tuple[int, int], n: int | None) -> tuple[int, int]:
    n_p, n_d = pd
    if n_p < 1 or n_d < 1:
        raise LlmplanError(f"disaggregation needs >= 1 prefill and >= 1 decode instance (got {n_p}:{n_d})")
    if n is not None and n_p + n_d != n:
        raise LlmplanError(
            f"disaggregation {n_p}:{n_d} needs {n_p + n_d} instances but the cluster has {n}; "
            "make the two numbers add up to the instance count"
        )
    return n_p, n_d


def cluster_from_plan(plan: Any, graph: Any, block_size: int = 16) -> list[InstanceSpec]:
    """One :class:`InstanceSpec` per instance of a saved :class:`~llmplan.plan.types.Plan`,
    priced by the planner's roofline on ``graph`` (``llmplan.topology.load_topology``) with
    KV capacity from the GPUs' memory left after weights."""
    from llmplan.plan.costmodel import InstanceCost

    specs = []
    for k, inst in enumerate(plan.instances):
        cost = InstanceCost.from_plan(plan, graph, instance=k)
        blocks = cost.kv_capacity_blocks(block_size)
        if blocks <= 0:
            raise LlmplanError(
                f"plan instance {k} ({', '.join(inst.gpus)}) has no memory left for KV after the weights; "
                "re-plan with more GPUs per instance"
            )
        prefix = {"prefill": "p", "decode": "d"}.get(inst.role, "i")
        specs.append(InstanceSpec(f"{prefix}{k}", cost, blocks, inst.role, tuple(inst.gpus)))
    return specs


def default_cluster(
    model: str = "llama-2-13b",
    topology: str = "preset:dgx-a100",
    mode: str = "HELR",
    block_size: int = 16,
    replicate: bool = True,
) -> tuple[list[InstanceSpec], Any, Any]:
    """The CLI's default cluster: plan ``model`` on ``topology`` with the planner (``mode``:
    HE, LR or HELR) and, when the plan places one instance, fill the machine with copies of
    it (data parallel). Returns ``(instances, topology_graph, plan)``; pass the graph as
    ``SimConfig.topology`` so P/D KV transfers are priced over the real links."""
    from dataclasses import replace

    from llmplan.models import get_model_spec
    from llmplan.plan.planner import make_plan
    from llmplan.topology import gpu_nodes, load_topology

    graph = load_topology(topology)
    plan = make_plan(get_model_spec(model), graph, mode, topology=topology)
    base = cluster_from_plan(plan, graph, block_size=block_size)
    if not replicate or len(base) > 1:
        return base, graph, plan
    per = max(len(base[0].gpus), 1)
    copies = max(len(gpu_nodes(graph)) // per, 1)
    # Copy k sits on the k-th group of GPUs, so KV transfers between copies use real links.
    nodes = gpu_nodes(graph)
    out = []
    for k in range(copies):
        gpus = tuple(nodes[k * per:(k + 1) * per]) if (k + 1) * per <= len(nodes) else base[0].gpus
        out.append(replace(base[0], name=f"i{k}", gpus=gpus))
    return out, graph, plan
