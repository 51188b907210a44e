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
    activation_bytes,
    decode_layer_time,
    head_time,
    prefill_layer_time,
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
) -> Problem:
    """Price every GPU and link for the reference workload (the only place the cost model is called)."""
    wl = workload or PlanWorkload()
    ctx = wl.input_len + wl.output_len / 2  # mean context over the decode phase
    layer_bytes = spec.layer_weight_bytes + kv_reserve_per_layer(spec, wl)
    costs = []
    for node, perf in gpus:
        usable = perf.usable_bytes(params)
        caps = []
        for role in (MIDDLE, FIRST, LAST, ONLY):
            extra = (spec.embed_weight_bytes if role & FIRST else 0) + (
                spec.head_weight_bytes if role & LAST else 0
            )
            caps.append(max(0, math.floor((usable - extra) / layer_bytes + 1e-9)))
        costs.append(
            GpuCost(
                node=node,
                perf=perf,
                p=prefill_layer_time(spec, perf, wl.input_len, 1, 1, params),
                d=decode_layer_time(spec, perf, wl.max_batch, ctx, 1, params),
                hp=head_time(spec, perf, 1, 1, params),
                hd=head_time(spec, perf, wl.max_batch, 1, params),
                caps=tuple(caps),  # type: ignore[arg-type]
            )
        )
    pre_bytes = activation_bytes(spec, wl.input_len)
    dec_bytes = activation_bytes(spec, wl.max_batch)
    types = [
        LinkCost(lp, transfer_time(pre_bytes, lp, params), transfer_time(dec_bytes, lp, params))
        for lp in link_types
    ]
    return Problem(spec, wl, params, costs, link_id, types, topology, layer_bytes)


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
    return build_problem(
        spec, perf, link_id, perfs, workload, params, topology=str(graph.graph.get("name", ""))
    )


def kv_reserve_per_layer(spec: ModelSpec, wl: PlanWorkload) -> float:
    """KV bytes one layer reserves for the reference batch (sliding-window layers capped; mean over
    layer kinds, so a stage of alternating layers is priced exactly and any stage within one layer)."""
    per_request = wl.kv_tokens // wl.max_batch
    return wl.max_batch * spec.kv_bytes_per_seq_layer(per_request)


def memory_breakdown(
    problem: Problem, g: int, count: int, role: int, start: int | None = None
) -> tuple[float, float, float]:
    """(weights, KV reserve, free) in GiB for ``count`` layers on GPU ``g`` (exact per layer kind
    when ``start`` is given, else every layer priced as the largest kind, as the caps are)."""
    spec, wl = problem.spec, problem.workload
    layers = (
        spec.range_weight_bytes(start, start + count)
        if start is not None
        else count * spec.layer_weight_bytes
    )
    w = (
        layers
        + (spec.embed_weight_bytes if role & FIRST else 0)
        + (spec.head_weight_bytes if role & LAST else 0)
    )
    kv = count * kv_reserve_per_layer(spec, wl)
    free = problem.gpus[g].perf.memory_bytes - w - kv
    return w / GIB, kv / GIB, free / GIB
