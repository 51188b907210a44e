"""P:D placement: pack the chosen prefill and decode instances onto hosts (OR-Tools CP-SAT).

No TP group spans hosts, and as many hosts as possible hold both a prefill and a decode
instance (the KV transfer between them stays on the host's fast link). The result is a
:class:`~llmplan.plan.types.Plan` in ``PD`` mode with per-stage memory and times.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from llmplan.errors import InfeasibleError
from llmplan.plan.costmodel import CostParams, InstanceCost
from llmplan.plan.pd.model import LengthStats, PDOption
from llmplan.plan.types import InstancePlan, Plan, PlanWorkload, StagePlan

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec


def place_on_hosts(
    spec: ModelSpec,
    graph: nx.Graph,
    best: PDOption,
    groups: dict[str, dict[str, list[str]]],
    stats: LengthStats,
    params: CostParams,
    topology: str,
) -> Plan:
    """CP-SAT packs instances onto hosts: TP groups stay in a host, decode instances join prefill hosts."""
    from ortools.sat.python import cp_model

    hosts = groups[best.prefill.gpu_model]
    names = list(hosts)
    m = cp_model.CpModel()
    kinds = [("prefill", best.prefill, best.n_prefill), ("decode", best.decode, best.n_decode)]
    x = {}
    for k, (_, _lay, count) in enumerate(kinds):
        for h in names:
            x[k, h] = m.NewIntVar(0, count, f"x{k}_{h}")
        m.Add(sum(x[k, h] for h in names) == count)
    both = []
    for h in names:
        m.Add(sum(x[k, h] * kinds[k][1].gpus for k in range(2)) <= len(hosts[h]))
        b = m.NewBoolVar(f"both_{h}")
        m.Add(x[0, h] >= 1).OnlyEnforceIf(b)
        m.Add(x[1, h] >= 1).OnlyEnforceIf(b)
        both.append(b)
    m.Maximize(sum(both))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = 5
    solver.parameters.num_workers = 1
    if solver.Solve(m) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise InfeasibleError(
            "the chosen instances cannot be packed onto hosts without splitting a TP group; "
            "use --max-gpus or a smaller TP"
        )
    instances = []
    for h in names:
        free = list(hosts[h])
        for k, (role, lay, _) in enumerate(kinds):
            for _ in range(solver.Value(x[k, h])):
                ids, free = free[: lay.gpus], free[lay.gpus :]
                stages = []
                for s, st in enumerate(lay.cost.stages):
                    grp = ids[s * lay.tp : (s + 1) * lay.tp]
                    one = InstanceCost(spec, [st], [], params)
                    w = st.weight_bytes_per_gpu(spec)
                    kv = max(0.0, min(g.usable_bytes(params) for g in st.gpus) - w)
                    stages.append(
                        StagePlan(
                            gpus=grp,
                            layer_start=st.start,
                            layer_end=st.end,
                            gpu_name=graph.nodes[grp[0]].get("name", ""),
                            weights_gib=round(w / 2**30, 3),
                            kv_gib=round(kv / 2**30, 3),
                            free_gib=round((st.gpu.memory_bytes - w - kv) / 2**30, 3),
                            prefill_s=one.prefill_time(int(stats.mean_input)) - params.iteration_overhead_s,
                            decode_s=one.decode_time(1, stats.mean_input) - params.iteration_overhead_s,
                        )
                    )
                instances.append(InstancePlan(role=role, stages=stages))
    return Plan(
        model=spec.name,
        model_spec=spec.to_dict(),
        topology=topology,
        mode="PD",
        instances=instances,
        workload=PlanWorkload(
            max_batch=max(
                1, int(best.decode.cost.kv_capacity_tokens() // (stats.mean_input + stats.mean_output))
            ),
            input_len=int(stats.mean_input),
            output_len=int(stats.mean_output),
        ),
        metrics={
            "goodput_rps": best.goodput,
            "goodput_per_gpu_rps": best.per_gpu,
            "attainment": best.attainment,
            "ratio": best.ratio,
        },
        params=dataclasses.asdict(params),
        pd=best.to_dict(),
    )
