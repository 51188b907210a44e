"""`llmplan plan` as a library call: model + topology + workload -> Plan (HE / LR / HELR)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmplan.errors import InfeasibleError
from llmplan.plan.costmodel import DEFAULT_PARAMS, GIB, CostParams
from llmplan.plan.helr import MODES, Placement, PlanTooLargeError, choose, frontier, helr_score, twin_classes
from llmplan.plan.problem import (
    FIRST,
    LAST,
    MIDDLE,
    ONLY,
    TP_DEGREES,
    Problem,
    expert_modes,
    memory_breakdown,
    problem_from_graph,
    role_of,
    tp_group_problem,
)
from llmplan.plan.types import InstancePlan, Plan, PlanWorkload, StagePlan, check_context

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec


def feasible(problem: Problem) -> bool:
    """Whether any placement fits, in O(n^2) numpy: one GPU alone, or a first/last pair plus middles.

    With first f and last l fixed, every other GPU that can hold a layer adds its middle cap;
    if the total reaches the layer count a placement exists (surplus middle stages can be
    dropped while the total stays >= N). Equals ``bool(frontier(problem))`` (tested).
    """
    import numpy as np

    n = problem.n_layers
    caps = np.array([g.caps for g in problem.gpus], dtype=np.int64).reshape(-1, 4)
    if len(caps) == 0:
        return False
    if (caps[:, ONLY] >= n).any():
        return True
    if len(caps) < 2 or n < 2:  # two stages need two layers
        return False
    mid = np.where(caps[:, MIDDLE] >= 1, caps[:, MIDDLE], 0)
    a = np.where(caps[:, FIRST] >= 1, caps[:, FIRST] - mid, -(10**12))
    b = np.where(caps[:, LAST] >= 1, caps[:, LAST] - mid, -(10**12))
    total = mid.sum() + a[:, None] + b[None, :]
    np.fill_diagonal(total, -(10**12))
    return bool(total.max() >= n)


def _infeasible_message(spec: ModelSpec, problem: Problem, workload: PlanWorkload) -> str:
    w = spec.weight_bytes / GIB
    kv = workload.max_batch * spec.kv_bytes_per_seq(workload.kv_tokens // workload.max_batch) / GIB
    usable = sum(g.perf.usable_bytes(problem.params) for g in problem.gpus) / GIB
    n = len(problem.gpus)
    fixes = []
    lo, hi = 0, workload.max_batch  # largest max_batch that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if feasible(
            dataclasses.replace(
                problem, **_rebuild(problem, spec, dataclasses.replace(workload, max_batch=mid))
            )
        ):
            lo = mid
        else:
            hi = mid - 1
    biggest = max(problem.gpus, key=lambda g: g.perf.memory_bytes)
    per_gpu = biggest.perf.usable_bytes(problem.params) / GIB
    extra = max(1, math.ceil((w + kv - usable) / per_gpu)) if per_gpu > 0 else 1
    fixes.append(f"add {extra} GPU{'s' if extra > 1 else ''} like {biggest.node} ({biggest.perf.name})")
    if lo >= 1:
        fixes.append(f"lower --max-batch to {lo}")
    else:
        lower = {"bf16": "fp8 or int4", "fp16": "fp8 or int4", "fp8": "int4", "int8": "int4"}
        opts = []
        if spec.weight_precision in lower:
            opts.append(f"--weight-dtype {lower[spec.weight_precision]}")
        if spec.kv_dtype != "fp8":
            opts.append("--kv-dtype fp8")
        fixes.append("use a smaller model" + (f" or lower precision ({', '.join(opts)})" if opts else ""))
    short = w + kv - usable
    gives = f"{n} GPUs give" if n > 1 else "1 GPU gives"
    gives += f" {usable:.1f} GiB usable"
    why = f"shortfall {short:.1f} GiB" if short > 0 else "but no split fits the per-GPU limits"
    return (
        f"{spec.name} needs {w:.1f} GiB weights + {kv:.1f} GiB KV (max_batch {workload.max_batch} x "
        f"{workload.kv_tokens // workload.max_batch} tokens); {gives}, {why}; " + " or ".join(fixes)
    )


def _rebuild(problem: Problem, spec: ModelSpec, workload: PlanWorkload) -> dict:
    from llmplan.plan.problem import build_problem

    nb = build_problem(
        spec,
        [(g.node, g.perf) for g in problem.gpus],
        problem.link_id,
        [lk.perf for lk in problem.link_types],
        workload,
        problem.params,
    )
    return {"gpus": nb.gpus, "workload": workload, "layer_bytes": nb.layer_bytes}


@dataclass(frozen=True, slots=True)
class JointChoice:
    """One point of the joint (TP degree x pipeline) frontier: ``gpus`` = stages x TP."""

    gpus: int
    latency: float
    problem: Problem
    placement: Placement

    @property
    def tp(self) -> int:
        return self.problem.tp

    @property
    def pp(self) -> int:
        return self.placement.gpus


def joint_frontier(base: Problem, tp_degrees: tuple[int, ...] = TP_DEGREES) -> dict[int, JointChoice]:
    """Min batch latency per GPU count over every TP degree and pipeline of TP groups.

    Exact over the joint choice: for each TP degree ``t`` and way of holding MoE experts (TP-sharded
    or EP, :func:`llmplan.plan.problem.expert_modes`) the frontier of the TP-group problem is exact
    (:func:`llmplan.plan.helr.frontier`) and a plan with ``S`` stages uses ``S * t`` GPUs, so the
    minimum over both per GPU count is the joint frontier (ties keep the smaller ``t``, then TP).
    """
    best: dict[int, JointChoice] = {}
    variants = [(d, ep) for d in sorted(set(tp_degrees)) for ep in expert_modes(base.spec, d)]
    twins = twin_classes(base) if any(d > 1 for d, _ in variants) else None
    for t, ep in variants:
        pb = tp_group_problem(base, t, ep, twins)
        if pb is None:
            continue
        try:
            front = frontier(pb)
        except PlanTooLargeError:
            if t == 1:
                raise
            continue
        for s, pl in front.items():
            g = s * t
            if g not in best or pl.latency < best[g].latency - 1e-12 * max(1.0, pl.latency):
                best[g] = JointChoice(g, pl.latency, pb, pl)
    return dict(sorted(best.items()))


def placement_to_instance(problem: Problem, pl: Placement, graph: nx.Graph | None = None) -> InstancePlan:
    stages = []
    start = 0
    s = len(pl.order)
    local: dict[str, tuple[str, int]] = {}
    if graph is not None:  # CUDA ordinals are per host
        by_host: dict[str, list[str]] = {}
        for n, a in graph.nodes(data=True):
            if a.get("kind") == "gpu":
                by_host.setdefault(str(a.get("host", "")), []).append(n)
        for h, ns in by_host.items():
            for k, n in enumerate(sorted(ns, key=lambda n: graph.nodes[n].get("index", 0))):
                local[n] = (h, k)
    for k, (g, c) in enumerate(zip(pl.order, pl.counts, strict=True)):
        role = role_of(k == 0, k == s - 1)
        w, kv, free = memory_breakdown(problem, g, c, role, start)
        gc = problem.gpus[g]
        link = ""
        if k + 1 < s:
            link = problem.link(g, pl.order[k + 1]).perf.kind
        members = list(problem.members[g]) if problem.members else [gc.node]
        first = members[0]
        stages.append(
            StagePlan(
                gpus=members,
                layer_start=start,
                layer_end=start + c,
                gpu_name=gc.perf.name,
                weights_gib=round(w, 3),
                kv_gib=round(kv, 3),
                free_gib=round(free, 3),
                prefill_s=problem.stage_pre(g, c, role),
                decode_s=problem.stage_dec(g, c, role),
                link_to_next=link,
                host=local[first][0] if first in local else "",
                local_index=local[first][1] if first in local else None,
            )
        )
        start += c
    return InstancePlan(role="both", stages=stages)


def _explain(
    mode: str, front: dict[int, JointChoice], chosen: JointChoice, a1: float, a2: float, problem: Problem
) -> list[str]:
    he = front[min(front)]
    lr = min(front.values(), key=lambda p: (p.latency, p.gpus))
    lines = []
    shape = f"TP {chosen.tp} x PP {chosen.pp}"
    if mode == "HE":
        lines.append(
            f"HE: {chosen.gpus} GPU{'s' if chosen.gpus > 1 else ''} ({shape}) is the fewest that hold the "
            f"model and its KV reserve; among those, the fastest layout."
        )
    elif mode == "LR":
        lines.append(
            f"LR: {chosen.gpus} GPUs ({shape}) give the lowest batch latency: tensor parallelism divides "
            f"every layer's prefill and decode time (at the price of two all-reduces per layer), "
            f"pipeline stages only overlap prompts; past this point transfers and all-reduces cost "
            f"more than they save."
        )
    else:
        lines.append(
            f"HELR (a1={a1:g} latency, a2={a2:g} GPUs, both min-max normalised between the HE and LR "
            f"plans): {chosen.gpus} GPUs ({shape}) score {helr_score(chosen, he, lr, a1, a2):.3f}."  # type: ignore[arg-type]
        )
    lines.append(
        "frontier (GPUs: TPxPP, batch latency, HELR score): "
        + "; ".join(
            f"{s}: {p.tp}x{p.pp}, {p.latency:.3f} s, {helr_score(p, he, lr, a1, a2):.3f}"  # type: ignore[arg-type]
            for s, p in front.items()
        )
    )
    pb, pl = chosen.problem, chosen.placement
    if pb.expert_parallel:
        from llmplan.plan.problem import expert_modes, tp_experts_reason

        why = (
            "faster than TP-sharded experts at this size (dispatch + combine all-to-all priced from the "
            "group's links)"
            if False in expert_modes(pb.spec, chosen.tp)
            else tp_experts_reason(pb.spec, chosen.tp)
        )
        lines.append(
            f"experts are sharded whole across each TP group (EP {chosen.tp}, --enable-expert-parallel): "
            f"{why}"
        )
    order = [pb.gpus[g].node for g in pl.order]
    if pl.gpus > 1:
        counts = ", ".join(f"{n}={c}" for n, c in zip(order, pl.counts, strict=True))
        lines.append(
            f"stage order {' -> '.join(order)}: adjacent stages sit on the fastest links available; layers "
            f"({counts}) balance the per-stage prefill time, the pipeline's bottleneck, within each GPU's "
            "memory cap; the last stage also runs the LM head."
        )
    return lines


def make_plan(
    spec: ModelSpec,
    graph: nx.Graph,
    mode: str = "HELR",
    *,
    a1: float = 0.5,
    a2: float = 0.5,
    workload: PlanWorkload | None = None,
    params: CostParams = DEFAULT_PARAMS,
    gpus: list[str] | None = None,
    topology: str = "",
    tp_degrees: tuple[int, ...] = TP_DEGREES,
) -> Plan:
    """The mode's plan over the joint choice of TP degree (``tp_degrees``) and pipeline layout."""
    mode = mode.upper()
    if mode not in MODES:
        raise InfeasibleError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if a1 < 0 or a2 < 0 or a1 + a2 <= 0:
        raise InfeasibleError("--a1 and --a2 must be >= 0 and not both 0")
    bad = [t for t in tp_degrees if t not in TP_DEGREES]
    if bad or not tp_degrees:
        raise InfeasibleError(f"--tp {bad or '(none)'}: TP degrees are {', '.join(map(str, TP_DEGREES))}")
    wl = workload or PlanWorkload()
    check_context(spec, wl)
    base = problem_from_graph(spec, graph, wl, params, gpus)
    if not base.gpus:
        raise InfeasibleError("the topology has no GPUs; check --topology")
    front = joint_frontier(base, tuple(tp_degrees))
    if not front:
        raise InfeasibleError(_infeasible_message(spec, base, wl))
    chosen: JointChoice = choose(front, mode, a1, a2)  # type: ignore[arg-type, assignment]
    problem, pl = chosen.problem, chosen.placement
    m = problem.evaluate(list(pl.order), list(pl.counts))
    assert m is not None
    inst = placement_to_instance(problem, pl, graph)
    return Plan(
        model=spec.name,
        model_spec=spec.to_dict(),
        topology=topology or problem.topology,
        mode=mode,
        instances=[inst],
        workload=wl,
        a1=a1,
        a2=a2,
        metrics={
            "gpus": chosen.gpus,
            "tp": chosen.tp,
            "pp": chosen.pp,
            "expert_parallel": problem.expert_parallel,
            "ttft_s": m["ttft_s"],
            "tpot_s": m["tpot_s"],
            "batch_latency_s": m["latency_s"],
            "prefill_bottleneck_s": m["beta_s"],
            "frontier": {
                str(g): {
                    "latency_s": c.latency,
                    "tp": c.tp,
                    "gpus": [gpu for i in c.placement.order for gpu in c.problem.members[i]],
                    "layers": list(c.placement.counts),
                }
                for g, c in front.items()
            },
        },
        explanation=_explain(mode, front, chosen, a1, a2, problem),
        params=dataclasses.asdict(params),
    )


def fill_plan(
    spec: ModelSpec,
    graph: nx.Graph,
    mode: str = "HELR",
    *,
    a1: float = 0.5,
    a2: float = 0.5,
    workload: PlanWorkload | None = None,
    params: CostParams = DEFAULT_PARAMS,
    gpus: list[str] | None = None,
    topology: str = "",
    max_instances: int | None = None,
    tp_degrees: tuple[int, ...] = TP_DEGREES,
) -> Plan:
    """Fill a topology with instances: plan one with ``mode`` on the GPUs left, take its GPUs
    away, repeat until the model no longer fits on what remains (or ``max_instances``).

    Each instance is exactly optimal for ``mode`` *on the GPUs it was planned on*: on one host,
    the GPUs left (it equals ``make_plan(..., gpus=remaining)``); across hosts, a host-aligned
    part of them (a partly used host's leftovers, then the untouched hosts), because the whole
    irregular remainder can exceed the exact search (its explanation line names the part).
    The fill as a whole is greedy: it does not
    search over ways to split the machine, so another partition can serve more requests per
    second (e.g. four 2-GPU instances instead of 3+2+2+1). HELR normalises between the HE and
    LR plans of the remaining GPUs, so later instances may choose a different GPU count.

    Returns one :class:`Plan` whose ``instances`` are disjoint; ``metrics["instances"]`` holds
    each instance's metrics, ``metrics["unused_gpus"]`` and ``metrics["stop_reason"]`` say what
    was left and why. Raises :class:`InfeasibleError` when not even one instance fits.
    """
    from llmplan.topology import gpu_nodes

    if max_instances is not None and max_instances < 1:
        raise InfeasibleError(f"max_instances must be >= 1 (got {max_instances})")
    scope = list(gpus) if gpus else list(gpu_nodes(graph))
    remaining = list(scope)
    plans: list[Plan] = []
    notes: list[str] = []
    stop = "every GPU is in an instance"

    def plan_on(subset: list[str]) -> Plan:
        return make_plan(
            spec, graph, mode, a1=a1, a2=a2, workload=workload, params=params, gpus=subset, topology=topology,
            tp_degrees=tp_degrees,
        )  # fmt: skip

    while remaining:
        if max_instances is not None and len(plans) >= max_instances:
            stop = f"reached --max-instances {max_instances}"
            break
        # Across hosts, plan host-aligned parts first (a partly used host's leftovers, then the
        # untouched hosts): their GPU classes stay regular, so the exact search stays fast, where
        # the whole irregular remainder can exceed it. Each instance is exact on its part.
        p, note = None, ""
        for part, what in _host_aligned_parts(graph, scope, remaining):
            try:
                p = plan_on(part)
            except InfeasibleError:
                continue
            note = f" (planned on {what})"
            break
        if p is None:
            try:
                p = plan_on(remaining)
            except PlanTooLargeError as exc:
                stop = f"the {len(remaining)} GPU(s) left are too irregular for the exact search: {exc}"
                break
            except InfeasibleError as exc:
                if not plans:
                    raise
                stop = f"{spec.name} does not fit on the {len(remaining)} GPU(s) left: {exc}"
                break
        plans.append(p)
        notes.append(note)
        used = set(p.instances[0].gpus)
        remaining = [g for g in remaining if g not in used]
    if not plans:
        raise InfeasibleError(f"fill: {stop}")
    first = plans[0]
    per = [{k: v for k, v in p.metrics.items() if k != "frontier"} for p in plans]
    explanation = [
        f"fill: {len(plans)} instance(s) on {sum(len(p.instances[0].gpus) for p in plans)} GPU(s), "
        f"planned one at a time with {first.mode} on the GPUs left (greedy across instances, exact "
        f"within each); stopped: {stop}."
    ]
    for k, p in enumerate(plans):
        m = p.metrics
        explanation.append(
            f"instance {k} ({', '.join(p.instances[0].gpus)}): {m['gpus']} GPU(s), batch latency "
            f"{m['batch_latency_s']:.3f} s, TTFT {m['ttft_s'] * 1e3:.1f} ms, "
            f"TPOT {m['tpot_s'] * 1e3:.2f} ms{notes[k]}; " + p.explanation[0]
        )
    return Plan(
        model=first.model,
        model_spec=first.model_spec,
        topology=first.topology,
        mode=first.mode,
        instances=[p.instances[0] for p in plans],
        workload=first.workload,
        a1=a1,
        a2=a2,
        metrics={
            "fill": True,
            "gpus": sum(m["gpus"] for m in per),
            "instances": per,
            "unused_gpus": remaining,
            "stop_reason": stop,
        },
        explanation=explanation,
        params=first.params,
    )


def _host_aligned_parts(
    graph: nx.Graph, scope: list[str], remaining: list[str]
) -> list[tuple[list[str], str]]:
    """Host-aligned proper subsets of ``remaining``, in the order a fill tries them: the leftovers
    of partly used hosts (each host alone, then together), then the untouched hosts. Empty on
    one host, or when no host is partly used."""
    hosts: dict[str, list[str]] = {}
    for g in remaining:
        hosts.setdefault(str(graph.nodes[g].get("host", "")), []).append(g)
    size = {h: sum(1 for g in scope if str(graph.nodes[g].get("host", "")) == h) for h in hosts}
    partial = [h for h in hosts if len(hosts[h]) < size[h]]
    full = [h for h in hosts if len(hosts[h]) == size[h]]
    parts = [(hosts[h], f"the {len(hosts[h])} GPU(s) left on host {h}") for h in partial]
    if len(partial) > 1:
        parts.append(([g for h in partial for g in hosts[h]], f"the leftovers of hosts {', '.join(partial)}"))
    if full and partial:
        parts.append(([g for h in full for g in hosts[h]], f"the {len(full)} untouched host(s)"))
    return [(p, w) for p, w in parts if p and len(p) < len(remaining)]


__all__ = ["make_plan", "fill_plan", "feasible", "placement_to_instance"]
