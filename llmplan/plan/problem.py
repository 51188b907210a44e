"""The HELR placement problem, priced once with the cost model.

Decision: an ordered GPU subset (pipeline stages) and a contiguous layer count per stage,
with ``count * m <= Mem(i) - T`` per GPU, where ``m`` is one layer's weights plus its share of
the KV reserve (``max_batch * (input + output)`` tokens) and ``T`` is the activation workspace
and framework slack (``CostParams``) plus the embeddings on the first stage and the final
norm + LM head on the last.

Latency of a plan (the ``a1`` term), for the reference batch of ``B`` requests:

* ``ttft = sum_s pre_s + sum_links xp``: one prompt's prefill through every stage;
* ``tpot = sum_s dec_s + sum_links xd``: one decode step of the whole batch (a step needs the
  previous token, so the batch cannot overlap with itself across stages);
* ``latency = ttft + (B - 1) * beta + O * tpot`` where ``beta = max(max_s pre_s, max_links xp)``:
  the B prompts stream through the pipeline one per micro-batch (GPipe fill, then one prompt
  per bottleneck interval), followed by O decode steps.

So spreading layers shortens the prefill bottleneck (``beta``) but adds transfers and puts
layers on slower GPUs; the three modes weigh that against the GPU count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from llmplan.plan.costmodel import (
    DEFAULT_PARAMS,
    GIB,
    CostParams,
    GpuPerf,
    LinkPerf,
    _kv_split,
    activation_bytes,
    decode_layer_time,
    head_time,
    layer_weight_bytes_per_gpu,
    prefill_layer_time,
    range_weight_bytes_per_gpu,
    tp_comm_time,
    transfer_time,
)
from llmplan.plan.types import PlanWorkload

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec

MIDDLE, FIRST, LAST, ONLY = 0, 1, 2, 3
ROLE_NAMES = ("middle", "first", "last", "only")


def role_of(first: bool, last: bool) -> int:
    return (FIRST if first else MIDDLE) | (LAST if last else MIDDLE)


@dataclass(slots=True)
class GpuCost:
    """Per-GPU prices for the reference workload."""

    node: str
    perf: GpuPerf
    p: float  # prefill seconds per layer, one prompt
    d: float  # decode seconds per layer, one step of the batch
    hp: float  # LM head, prefill (one logit)
    hd: float  # LM head, decode step (B logits)
    caps: tuple[int, int, int, int]  # max layers by role (middle, first, last, only)


@dataclass(slots=True)
class LinkCost:
    perf: LinkPerf
    xp: float  # activations of one prompt
    xd: float  # activations of one decode step of the batch


@dataclass(slots=True)
class Problem:
    spec: ModelSpec
    workload: PlanWorkload
    params: CostParams
    gpus: list[GpuCost]
    link_id: np.ndarray  # (n, n) index into link_types; -1 on the diagonal
    link_types: list[LinkCost]
    topology: str = ""
    layer_bytes: float = 0.0
    _cache: dict = field(default_factory=dict, repr=False)
    tp: int = 1  # GPUs per stage (each "GPU" of this problem is a TP group of tp GPUs)
    members: list[tuple[str, ...]] = field(default_factory=list)  # topology GPUs of each entry
    hosts: list[str] = field(default_factory=list)  # host of each entry
    expert_parallel: bool = False

    def link(self, i: int, j: int) -> LinkCost:
        return self.link_types[int(self.link_id[i, j])]

    @property
    def n_layers(self) -> int:
        return self.spec.num_hidden_layers

    @property
    def K(self) -> int:  # noqa: N802 - the formula's name
        return self.workload.max_batch - 1

    @property
    def O(self) -> int:  # noqa: N802, E743
        return self.workload.output_len

    # ---- pricing one stage / one plan -----------------------------------------------------
    def stage_pre(self, g: int, c: int, role: int) -> float:
        gc = self.gpus[g]
        return c * gc.p + (gc.hp if role & LAST else 0.0)

    def stage_dec(self, g: int, c: int, role: int) -> float:
        gc = self.gpus[g]
        return c * gc.d + (gc.hd if role & LAST else 0.0)

    def evaluate(self, order: list[int], counts: list[int]) -> dict[str, float] | None:
        """Metrics of a pipeline, or None when it breaks a memory cap or does not cover the model."""
        if len(order) != len(counts) or sum(counts) != self.n_layers or len(set(order)) != len(order):
            return None
        s = len(order)
        pre = dec = beta = 0.0
        for k, (g, c) in enumerate(zip(order, counts, strict=True)):
            role = role_of(k == 0, k == s - 1)
            if c < 1 or c > self.gpus[g].caps[role]:
                return None
            sp = self.stage_pre(g, c, role)
            pre += sp
            dec += self.stage_dec(g, c, role)
            beta = max(beta, sp)
        for a, b in zip(order, order[1:], strict=False):
            lk = self.link(a, b)
            pre += lk.xp
            dec += lk.xd
            beta = max(beta, lk.xp)
        ovh = self.params.iteration_overhead_s
        return {
            "ttft_s": pre + ovh,
            "tpot_s": dec + ovh,
            "beta_s": beta,
            "latency_s": pre + self.K * beta + self.O * dec + (self.workload.max_batch + self.O) * ovh,
            "gpus": s,
        }

    def latency_const(self) -> float:
        return (self.workload.max_batch + self.O) * self.params.iteration_overhead_s


def build_problem(
    spec: ModelSpec,
    gpus: list[tuple[str, GpuPerf]],
    link_id: np.ndarray,
    link_types: list[LinkPerf],
    workload: PlanWorkload | None = None,
    params: CostParams = DEFAULT_PARAMS,
    topology: str = "",
    tp: int = 1,
    tp_links: list[LinkPerf] | None = None,
    ep: bool = False,
) -> Problem:
    """Price every GPU (or TP group of ``tp`` GPUs) and link for the reference workload.

    A TP group divides weights, FLOPs, the LM head and the KV cache (KV heads replicate beyond
    their count; MLA's latent on every rank) and adds two all-reduces of the activations per
    layer over the group's slowest link ``tp_links[i]``; with expert parallelism (``ep``) MoE
    layers trade the second all-reduce for a dispatch + combine all-to-all and hold the shared
    experts whole (:func:`tp_comm_time`, :func:`layer_weight_bytes_per_gpu`).
    """
    wl = workload or PlanWorkload()
    ctx = wl.input_len + wl.output_len / 2  # mean context over the decode phase
    kv_split = _kv_split(spec, tp)
    ep = ep and tp > 1 and spec.is_moe
    kv_layer = kv_reserve_per_layer(spec, wl) / kv_split
    layer_bytes = layer_weight_bytes_per_gpu(spec, tp, ep) + kv_layer
    # The first stage holds layers [0, c): DeepSeek's first-k dense layers are priced as dense there
    # (every other stage as the largest kind: it starts past them unless the first stage holds
    # fewer than k layers, where the cap stays conservative).
    n_small = spec.dense_layers if spec.moe_layers else 0
    small_bytes = layer_weight_bytes_per_gpu(spec, tp, ep, moe=False) + kv_layer

    def cap(room: float, first: bool) -> int:
        if first and n_small and room >= n_small * small_bytes:
            return n_small + math.floor((room - n_small * small_bytes) / layer_bytes + 1e-9)
        per = small_bytes if first and n_small else layer_bytes
        return max(0, math.floor(room / per + 1e-9))

    pre_bytes = activation_bytes(spec, wl.input_len)
    dec_bytes = activation_bytes(spec, wl.max_batch)
    costs = []
    for k, (node, perf) in enumerate(gpus):
        usable = perf.usable_bytes(params)
        caps = []
        for role in (MIDDLE, FIRST, LAST, ONLY):
            extra = (spec.embed_weight_bytes if role & FIRST else 0) + (
                spec.head_weight_bytes if role & LAST else 0
            )
            caps.append(cap(usable - extra / tp, bool(role & FIRST)))
        ar_p = ar_d = 0.0
        if tp > 1:
            lk = tp_links[k] if tp_links else LinkPerf(math.inf, 0.0, "SELF")
            ar_p = tp_comm_time(spec, wl.input_len, tp, lk, params, ep)
            ar_d = tp_comm_time(spec, wl.max_batch, tp, lk, params, ep)
        costs.append(
            GpuCost(
                node=node,
                perf=perf,
                p=prefill_layer_time(spec, perf, wl.input_len, 1, tp, params, ep) + ar_p,
                d=decode_layer_time(spec, perf, wl.max_batch, ctx, tp, params, ep) + ar_d,
                hp=head_time(spec, perf, 1, tp, params),
                hd=head_time(spec, perf, wl.max_batch, tp, params),
                caps=tuple(caps),  # type: ignore[arg-type]
            )
        )
    types = [
        LinkCost(lp, transfer_time(pre_bytes, lp, params), transfer_time(dec_bytes, lp, params))
        for lp in link_types
    ]
    return Problem(spec, wl, params, costs, link_id, types, topology, layer_bytes, tp=tp, expert_parallel=ep)


def problem_from_graph(
    spec: ModelSpec,
    graph: nx.Graph,
    workload: PlanWorkload | None = None,
    params: CostParams = DEFAULT_PARAMS,
    gpus: list[str] | None = None,
) -> Problem:
    from llmplan.plan.costmodel import best_link

    nodes = gpus or sorted(
        (n for n, a in graph.nodes(data=True) if a.get("kind") == "gpu"),
        key=lambda n: graph.nodes[n].get("index", 0),
    )
    perf = [(n, GpuPerf.from_attrs(graph.nodes[n])) for n in nodes]
    for _, gp in perf:
        gp.check_precision(spec)
    pos = {n: i for i, n in enumerate(nodes)}
    link_id = np.full((len(nodes), len(nodes)), -1, dtype=np.int32)
    types: dict[tuple, int] = {}
    seen = 0
    for a, b, attrs in graph.edges(data=True):  # one pass; pairs without an edge fall back below
        i, j = pos.get(a), pos.get(b)
        if i is None or j is None or i == j:
            continue
        key = (attrs.get("bandwidth_gbps"), attrs.get("latency_us", 0.0), attrs.get("link", ""))
        link_id[i, j] = link_id[j, i] = types.setdefault(key, len(types))
        seen += 1
    perfs = [LinkPerf(float(bw) * 1e9, float(lat) * 1e-6, str(kind)) for bw, lat, kind in types]
    if seen < len(nodes) * (len(nodes) - 1) // 2:
        for i, a in enumerate(nodes):
            for j in range(i + 1, len(nodes)):
                if link_id[i, j] < 0:
                    lp = best_link(graph, a, nodes[j])
                    perfs.append(lp)
                    link_id[i, j] = link_id[j, i] = len(perfs) - 1
    pb = build_problem(
        spec, perf, link_id, perfs, workload, params, topology=str(graph.graph.get("name", ""))
    )
    pb.members = [(n,) for n in nodes]
    pb.hosts = [str(graph.nodes[n].get("host", "")) for n in nodes]
    return pb


TP_DEGREES = (1, 2, 4, 8)


def tp_infeasible_reason(spec: ModelSpec, tp: int) -> str | None:
    """Why vLLM cannot shard this model ``tp`` ways (None when it can)."""
    if spec.num_attention_heads % tp:
        return f"{spec.num_attention_heads} attention heads do not divide by TP {tp}"
    kv = spec.kv_split_heads
    if kv > tp and kv % tp:
        return f"{kv} KV heads do not divide by TP {tp}"
    if spec.is_moe and not expert_modes(spec, tp):
        return f"{spec.num_experts} experts do not divide by EP {tp} and {tp_experts_reason(spec, tp)}"
    return None


def tp_experts_reason(spec: ModelSpec, tp: int) -> str:
    """Why experts cannot be TP-sharded ``tp`` ways (for messages; see :func:`_experts_need_ep`)."""
    if spec.moe_intermediate_size % tp:
        return f"the expert width {spec.moe_intermediate_size} does not divide by TP {tp}"
    return f"a TP slice of {spec.moe_intermediate_size}/{tp} would split fp8 128-blocks"


def expert_modes(spec: ModelSpec, tp: int) -> tuple[bool, ...]:
    """How a TP group of ``tp`` GPUs may hold an MoE model's experts: ``False`` = TP-sharded (each
    expert's intermediate dimension split; not where a slice would break fp8 128-blocks), ``True`` =
    expert parallel (EP = ``tp``, whole experts per GPU; the experts must divide by ``tp``). Dense
    models and ``tp == 1``: ``(False,)``. TP first, so ties keep TP."""
    if tp <= 1 or not spec.is_moe:
        return (False,)
    modes = []
    if not _experts_need_ep(spec, tp):
        modes.append(False)
    if spec.num_experts % tp == 0:
        modes.append(True)
    return tuple(modes)


def _experts_need_ep(spec: ModelSpec, tp: int) -> bool:
    """TP-sharded experts need their intermediate size to split into whole fp8 blocks (128)."""
    if tp <= 1 or not spec.is_moe:
        return False
    shard = spec.moe_intermediate_size / tp
    if shard != int(shard):
        return True
    return spec.weight_precision == "fp8" and int(shard) % 128 != 0


def tp_group_problem(
    base: Problem, tp: int, ep: bool | None = None, twins: list[list[int]] | None = None
) -> Problem | None:
    """The problem whose "GPUs" are TP groups of ``tp`` interchangeable GPUs on one host.

    Groups are cut from twin classes (GPUs with equal prices and equal links to every other GPU,
    :func:`twin_classes`) split by host, so every way of forming them is
    equivalent and the exact solver's result on this problem is exact over all plans whose stages
    are such groups. ``ep`` picks how MoE experts are held (:func:`expert_modes`; None: the first
    valid mode). ``twins``: ``twin_classes(base)`` when the caller has it. None when no group can be
    formed or ``ep`` is not valid at ``tp``.
    """
    if tp == 1:
        return None if ep else base
    spec = base.spec
    if tp_infeasible_reason(spec, tp):
        return None
    modes = expert_modes(spec, tp)
    if ep is None:
        ep = modes[0]
    elif ep not in modes:
        return None
    groups: list[list[int]] = []
    for cls in twins if twins is not None else twin_classes(base):
        by_host: dict[str, list[int]] = {}
        for i in cls:
            by_host.setdefault(base.hosts[i] if base.hosts else "", []).append(i)
        for members in by_host.values():
            groups.extend(members[k * tp : (k + 1) * tp] for k in range(len(members) // tp))
    if not groups:
        return None
    return groups_problem(base, groups, tp, ep)


def tp_candidate_groups(base: Problem, tp: int) -> list[list[int]]:
    """Every set of ``tp`` interchangeable GPUs on one host (the space the joint planner searches;
    :func:`tp_group_problem` uses one partition of it, the brute-force reference all of it)."""
    import itertools

    out: list[list[int]] = []
    for cls in twin_classes(base):
        by_host: dict[str, list[int]] = {}
        for i in cls:
            by_host.setdefault(base.hosts[i] if base.hosts else "", []).append(i)
        for members in by_host.values():
            out.extend(list(c) for c in itertools.combinations(members, tp))
    return out


def groups_problem(base: Problem, groups: list[list[int]], tp: int, ep: bool | None = None) -> Problem:
    """A problem whose entries are the given TP groups (indices into ``base.gpus``), priced at ``tp``
    with experts held as ``ep`` says (None: the first of :func:`expert_modes`)."""
    spec = base.spec
    tp_links = []
    for g in groups:
        worst = min((base.link(a, b).perf for a in g for b in g if a < b), key=lambda lk: lk.bandwidth)
        tp_links.append(worst)
    reps = [g[0] for g in groups]
    types: dict[int, int] = {}
    link_id = np.full((len(groups), len(groups)), -1, dtype=np.int32)
    for x, a in enumerate(reps):
        for y, b in enumerate(reps):
            if x != y and a != b:
                link_id[x, y] = types.setdefault(int(base.link_id[a, b]), len(types))
    link_types = [base.link_types[k].perf for k, _ in sorted(types.items(), key=lambda kv: kv[1])]
    pb = build_problem(
        spec,
        [("+".join(base.gpus[i].node for i in g), base.gpus[g[0]].perf) for g in groups],
        link_id,
        link_types,
        base.workload,
        base.params,
        base.topology,
        tp=tp,
        tp_links=tp_links,
        ep=expert_modes(spec, tp)[0] if ep is None else ep,
    )
    pb.members = [tuple(base.gpus[i].node for i in g) for g in groups]
    pb.hosts = [base.hosts[g[0]] if base.hosts else "" for g in groups]
    return pb


def kv_reserve_per_layer(spec: ModelSpec, wl: PlanWorkload) -> float:
    """KV bytes one layer reserves for the reference batch (sliding-window layers capped; mean over
    layer kinds, so a stage of alternating layers is priced exactly and any stage within one layer)."""
    per_request = wl.kv_tokens // wl.max_batch
    return wl.max_batch * spec.kv_bytes_per_seq_layer(per_request)


def memory_breakdown(
    problem: Problem, g: int, count: int, role: int, start: int | None = None
) -> tuple[float, float, float]:
    """(weights, KV reserve, free) in GiB per GPU for ``count`` layers on GPU (TP group) ``g`` (exact
    per layer kind when ``start`` is given, else every layer priced as the largest kind)."""
    spec, wl, tp, ep = problem.spec, problem.workload, problem.tp, problem.expert_parallel
    layers = (
        range_weight_bytes_per_gpu(spec, start, start + count, tp, ep)
        if start is not None
        else count * layer_weight_bytes_per_gpu(spec, tp, ep)
    )
    w = (
        layers
        + ((spec.embed_weight_bytes if role & FIRST else 0) + (spec.head_weight_bytes if role & LAST else 0))
        / tp
    )
    if start is not None:  # the stage's own layer kinds (sliding-window layers capped)
        per_request = wl.kv_tokens // wl.max_batch
        kv = wl.max_batch * spec.range_kv_bytes_per_seq(start, start + count, per_request)
    else:
        kv = count * kv_reserve_per_layer(spec, wl)
    kv /= _kv_split(spec, tp)
    free = problem.gpus[g].perf.memory_bytes - w - kv
    return w / GIB, kv / GIB, free / GIB


def twin_classes(problem: Problem) -> list[list[int]]:
    """Partition GPU indices into classes of interchangeable GPUs (:mod:`llmplan.plan.helr`'s
    docstring, 3). It lives beside :class:`Problem` because the TP grouping above needs it too.

    Candidates share prices and the multiset of their link types (necessary); each candidate
    is then checked against a class representative row by row with numpy (sufficient).
    """
    ids = problem.link_id
    n = len(problem.gpus)
    buckets: dict[tuple, list[int]] = {}
    for i in range(n):
        g = problem.gpus[i]
        row = np.delete(ids[i], i)
        key = (g.p, g.d, g.hp, g.hd, g.caps, tuple(np.bincount(row, minlength=len(problem.link_types))))
        buckets.setdefault(key, []).append(i)
    classes: list[list[int]] = []
    for members in buckets.values():
        local: list[list[int]] = []
        for i in members:
            for cls in local:
                j = cls[0]
                mask = np.ones(n, dtype=bool)
                mask[[i, j]] = False
                if np.array_equal(ids[i][mask], ids[j][mask]):
                    cls.append(i)
                    break
            else:
                local.append([i])
        classes.extend(local)
    classes.sort(key=lambda c: c[0])
    return classes
