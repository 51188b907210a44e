"""P:D search: every layout pair and prefill:decode ratio, the best goodput per GPU, the capacity.

:func:`plan_pd` enumerates the (TP, PP) layouts that fit the topology, prices each pair with
the analytic model (:mod:`llmplan.plan.pd.model`), keeps the best unit and four runner-ups,
replicates the best unit to serve ``--rate``, and has :mod:`llmplan.plan.pd.placement` put the
instances on hosts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from llmplan.errors import InfeasibleError, LlmplanError
from llmplan.plan.costmodel import (
    DEFAULT_PARAMS,
    CostParams,
    GpuPerf,
    InstanceCost,
    LinkPerf,
    StageSpec,
    best_link,
)
from llmplan.plan.pd.model import (
    Layout,
    LengthStats,
    PDOption,
    PDRequest,
    _capacity,
    _DecodeModel,
    _fewest_gpus,
    _goodput,
    _PrefillModel,
)
from llmplan.plan.pd.placement import place_on_hosts
from llmplan.plan.types import Plan

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec

MAX_RATIO = 8  # largest prefill or decode count in a ratio unit (8:1 ... 1:8)


@dataclass(slots=True)
class PDResult:
    best: PDOption
    runners_up: list[PDOption]
    plan: Plan
    request: PDRequest
    stats: LengthStats
    at_rate: dict[str, float] | None = None
    validation: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # The capacity answer: the fewest GPUs whose split holds the attainment target at the
    # workload's own rate (None without a rate; ``capacity_attainment`` is that split's
    # predicted attainment at the rate). ``capacity_checked`` says a rate was given.
    capacity: PDOption | None = None
    capacity_attainment: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": self.best.to_dict(),
            "runners_up": [o.to_dict() for o in self.runners_up],
            "slo": {
                "ttft_s": self.request.slo_ttft_s,
                "tpot_s": self.request.slo_tpot_s,
                "attainment": self.request.attainment,
            },
            "workload": {
                "source": self.stats.source,
                "rate": self.stats.rate,
                "mean_input": self.stats.mean_input,
                "mean_output": self.stats.mean_output,
            },
            "at_rate": self.at_rate,
            "capacity": (
                None
                if self.capacity is None
                else {**self.capacity.to_dict(), "attainment_at_rate": self.capacity_attainment}
            ),
            "validation": self.validation,
            "plan": self.plan.to_dict(),
            "notes": self.notes,
        }


# ---- candidate layouts from the topology ----------------------------------------------------


def _gpu_groups(graph: nx.Graph, gpus: list[str] | None) -> dict[str, dict[str, list[str]]]:
    """GPU model -> host -> GPU ids (sorted by index)."""
    nodes = gpus or [n for n, a in graph.nodes(data=True) if a.get("kind") == "gpu"]
    out: dict[str, dict[str, list[str]]] = {}
    for n in sorted(nodes, key=lambda n: graph.nodes[n].get("index", 0)):
        a = graph.nodes[n]
        out.setdefault(str(a.get("model") or a.get("name")), {}).setdefault(
            str(a.get("host", "node0")), []
        ).append(n)
    return out


def _layouts(
    spec: ModelSpec, graph: nx.Graph, groups: dict[str, dict[str, list[str]]], params: CostParams
) -> list[tuple[Layout, list[str]]]:
    out = []
    heads = spec.num_attention_heads
    need_tokens = 1
    for model, hosts in groups.items():
        host_ids = list(hosts.values())
        per_host = max(len(h) for h in host_ids)
        total = sum(len(h) for h in host_ids)
        for tp in (1, 2, 4, 8):
            if tp > per_host or heads % tp:
                continue
            for pp in (1, 2, 4):
                if tp * pp > total or pp > spec.num_hidden_layers:
                    continue
                # representative GPUs: fill hosts in order
                flat = [g for h in host_ids for g in h][: tp * pp]
                if tp > 1 and len({graph.nodes[g].get("host") for g in flat[:tp]}) > 1:
                    continue
                stages, links = [], []
                bounds = [round(k * spec.num_hidden_layers / pp) for k in range(pp + 1)]
                for k in range(pp):
                    grp = flat[k * tp : (k + 1) * tp]
                    tpl = best_link(graph, grp[0], grp[1]) if tp > 1 else LinkPerf(math.inf, 0.0, "SELF")
                    stages.append(
                        StageSpec(
                            tuple(GpuPerf.from_attrs(graph.nodes[g]) for g in grp),
                            bounds[k],
                            bounds[k + 1],
                            k == 0,
                            k == pp - 1,
                            tpl,
                        )
                    )
                    if k:
                        links.append(best_link(graph, flat[(k - 1) * tp], grp[0]))
                cost = InstanceCost(spec, stages, links, params)
                if cost.kv_capacity_tokens() < need_tokens:
                    continue
                out.append((Layout(model, tp, pp, cost), flat))
    return out


def _check_request(spec: ModelSpec, stats: LengthStats, req: PDRequest) -> None:
    if not (0 < req.attainment < 1) or req.slo_ttft_s <= 0 or req.slo_tpot_s <= 0:
        raise LlmplanError("--slo-ttft and --slo-tpot must be > 0 and --attainment in (0, 1)")
    longest = int((stats.inputs + stats.outputs).max())
    if longest > spec.max_position_embeddings:
        i = int(np.argmax(stats.inputs + stats.outputs))
        raise LlmplanError(
            f"a request of input {int(stats.inputs[i])} + output {int(stats.outputs[i])} = {longest} tokens "
            f"exceeds {spec.name}'s max_position_embeddings {spec.max_position_embeddings}; "
            "drop or truncate the long requests, or use a longer-context model"
        )


@dataclass(slots=True)
class _Search:
    """The state of one search over layout pairs: the options found so far, the decode models
    and capacities shared by every prefill layout, the best zero-load TTFT/TPOT (for the
    refusal) and the capacity answer (fewest GPUs holding the target at the workload's rate)."""

    spec: ModelSpec
    graph: nx.Graph
    groups: dict[str, dict[str, list[str]]]
    stats: LengthStats
    req: PDRequest
    params: CostParams
    budget: int
    options: list[PDOption] = field(default_factory=list)
    dmodels: dict[int, _DecodeModel] = field(default_factory=dict)
    dcaps: dict[int, float] = field(default_factory=dict)
    best_ttft: float = math.inf
    best_tpot: float = math.inf
    capacity: tuple[PDOption, float] | None = None

    def threshold(self) -> float:
        """Per-GPU goodput an option must beat to enter the top five (winner + runner-ups)."""
        if len(self.options) < 5:
            return 0.0
        return sorted((o.per_gpu for o in self.options), reverse=True)[4]

    def pair(self, pl: Layout, pids: list[str], dl: Layout, dids: list[str]) -> None:
        """Price prefill layout ``pl`` with decode layout ``dl``: every coprime ratio that can
        still enter the top five, and (with a rate) the fewest GPUs of this pair for the rate."""
        req, stats = self.req, self.stats
        # KV moves from the prefill instance to a decode instance placed right after it
        # (same host when both fit, else on the next host).
        flat = [g for h in self.groups[dl.gpu_model].values() for g in h]
        dst = flat[pl.gpus] if pl.gpu_model == dl.gpu_model and pl.gpus < len(flat) else dids[0]
        kv_link = best_link(self.graph, pids[0], dst) if dst != pids[0] else LinkPerf(math.inf, 0.0, "SELF")
        pm = _PrefillModel(pl, stats, kv_link, self.spec, self.params)
        if id(dl) not in self.dmodels:
            self.dmodels[id(dl)] = _DecodeModel(dl, stats, req.slo_tpot_s, req.max_num_seqs)
        dm = self.dmodels[id(dl)]
        self.best_ttft = min(self.best_ttft, float(np.quantile(pm.total + pm.kv, req.attainment)))
        self.best_tpot = min(self.best_tpot, dm.tpot(1))
        # Arrivals split evenly, so (k*n_p, k*n_d) has k times the goodput of (n_p, n_d):
        # goodput per GPU depends on the ratio only. Search coprime ratios, then replicate.
        # Both attainments are <= 1, so each side alone bounds the goodput:
        # goodput <= min(n_p * cap_p, n_d * cap_d); ratios whose bound cannot beat the
        # current runner-up threshold are skipped (exact pruning).
        cap_p = _capacity(lambda r: pm.attainment(r, req.slo_ttft_s), req.attainment, 1.0 / pm.es)
        if id(dl) not in self.dcaps:
            self.dcaps[id(dl)] = _capacity(
                dm.attainment, req.attainment, dm.max_b / (dm.eo * dm.tpot(1)) + 1.0
            )
        cap_d = self.dcaps[id(dl)]
        if stats.rate:
            self._capacity_at_rate(pm, dm, pl, dl, kv_link.kind, stats.rate)
        for ub, n_p, n_d in self._ratios(pl, dl, cap_p, cap_d):
            if ub <= 0 or ub < self.threshold():
                break
            g, a, ta, da = _goodput(pm, dm, n_p, n_d, req)
            if g > 0:
                self.options.append(PDOption(pl, dl, n_p, n_d, g, a, ta, da, kv_link.kind))

    def _ratios(self, pl: Layout, dl: Layout, cap_p: float, cap_d: float) -> list[tuple[float, int, int]]:
        """Coprime ratios n_p:n_d up to MAX_RATIO within the budget, best goodput-per-GPU bound first."""
        cands = []
        for n_p in range(1, min(MAX_RATIO, self.budget // pl.gpus) + 1):
            for n_d in range(1, min(MAX_RATIO, (self.budget - n_p * pl.gpus) // dl.gpus) + 1):
                if math.gcd(n_p, n_d) == 1:
                    ub = min(n_p * cap_p, n_d * cap_d) / (n_p * pl.gpus + n_d * dl.gpus)
                    cands.append((ub, n_p, n_d))
        cands.sort(reverse=True)
        return cands

    def _capacity_at_rate(
        self, pm: _PrefillModel, dm: _DecodeModel, pl: Layout, dl: Layout, kv_link: str, rate: float
    ) -> None:
        found = _fewest_gpus(pm, dm, pl, dl, rate, self.req, self.budget)
        if found is None:
            return
        n_p, n_d, a_rate = found
        gpus_needed = n_p * pl.gpus + n_d * dl.gpus
        if self.capacity is None or (gpus_needed, -a_rate) < (self.capacity[0].gpus, -self.capacity[1]):
            g, a, ta, da = _goodput(pm, dm, n_p, n_d, self.req)
            self.capacity = (PDOption(pl, dl, n_p, n_d, g, a, ta, da, kv_link), a_rate)

    def refusal(self) -> InfeasibleError:
        """Why no option was found: the SLO that no layout reaches at zero load, with its best value."""
        req, parts = self.req, []
        if self.best_ttft > req.slo_ttft_s:
            parts.append(
                f"--slo-ttft {req.slo_ttft_s:g} s cannot be met: the best layout reaches TTFT "
                f"p{req.attainment * 100:.0f} {self.best_ttft:.3f} s at zero load"
            )
        if self.best_tpot > req.slo_tpot_s:
            parts.append(
                f"--slo-tpot {req.slo_tpot_s:g} s cannot be met: the best layout decodes at "
                f"{self.best_tpot:.4f} s/token at batch 1"
            )
        if not parts:
            parts.append("each SLO is reachable alone but not both at the target attainment")
        return InfeasibleError("; ".join(parts) + "; relax the SLO or add faster GPUs")


def _replicate(best: PDOption, rate: float | None, budget: int) -> PDOption:
    """Replicate the best unit until it serves the requested rate (within the GPU budget)."""
    if not rate or best.goodput >= rate:
        return best
    k = min(math.ceil(rate / best.goodput), budget // best.gpus)
    if k <= 1:
        return best
    return PDOption(
        best.prefill,
        best.decode,
        best.n_prefill * k,
        best.n_decode * k,
        best.goodput * k,
        best.attainment,
        best.ttft_att,
        best.tpot_att,
        best.kv_link,
    )


def _runner_ups(options: list[PDOption]) -> list[PDOption]:
    """The next-best units after ``options[0]`` (distinct layout pair and ratio), at most four."""

    def key(o: PDOption) -> tuple[str, str, int, int]:
        return (o.prefill.label(), o.decode.label(), o.n_prefill, o.n_decode)

    seen, runners = {key(options[0])}, []
    for o in options[1:]:
        if key(o) not in seen:
            seen.add(key(o))
            runners.append(o)
        if len(runners) == 4:
            break
    return runners


def plan_pd(
    spec: ModelSpec,
    graph: nx.Graph,
    stats: LengthStats,
    req: PDRequest,
    params: CostParams = DEFAULT_PARAMS,
    gpus: list[str] | None = None,
    topology: str = "",
) -> PDResult:
    _check_request(spec, stats, req)
    groups = _gpu_groups(graph, gpus)
    total_gpus = sum(len(h) for hosts in groups.values() for h in hosts.values())
    budget = min(total_gpus, req.max_gpus or total_gpus)
    layouts = [
        (lay, ids)
        for lay, ids in _layouts(spec, graph, groups, params)
        if lay.cost.kv_capacity_tokens() >= stats.inputs.max() + stats.outputs.max()
    ]
    if not layouts:
        raise InfeasibleError(
            f"{spec.name} fits no instance layout on this topology with room for a "
            f"{int(stats.inputs.max() + stats.outputs.max())}-token request; add GPUs or use a smaller model"
        )
    search = _Search(spec, graph, groups, stats, req, params, budget)
    for pl, pids in layouts:
        for dl, dids in layouts:
            if pl.gpu_model != dl.gpu_model and len(groups) == 1:
                continue
            search.pair(pl, pids, dl, dids)
    options = search.options
    if not options:
        raise search.refusal()
    options.sort(key=lambda o: (-o.per_gpu, o.gpus))
    best = _replicate(options[0], stats.rate, budget)
    plan = place_on_hosts(spec, graph, best, groups, stats, params, topology)
    res = PDResult(best, _runner_ups(options), plan, req, stats)
    if search.capacity is not None:
        res.capacity, res.capacity_attainment = search.capacity
    if stats.rate:
        pm = _PrefillModel(best.prefill, stats, LinkPerf(math.inf, 0.0), spec, params)
        dm = _DecodeModel(best.decode, stats, req.slo_tpot_s, req.max_num_seqs)
        a = pm.attainment(stats.rate / best.n_prefill, req.slo_ttft_s)
        b = dm.attainment(stats.rate / best.n_decode)
        res.at_rate = {"rate": stats.rate, "attainment": a * b, "ttft_attainment": a, "tpot_attainment": b}
    return res
