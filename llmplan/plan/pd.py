"""P:D planning: how many prefill and decode instances, with which parallelism and GPUs.

Goal (DistServe): maximise goodput per GPU, where goodput is the highest request rate at
which at least ``attainment`` of the requests meet both the TTFT and the TPOT SLO.

Analytic model (every time comes from :mod:`llmplan.plan.costmodel`):

* **Prefill instance** -- an M/G/1 queue (Poisson arrivals split evenly over ``n_p``
  instances, one prompt at a time as in DistServe's analysis). Service time of a prompt of
  I tokens is its prefill time (PP stages run back to back for a batch, as in the
  simulator); its response adds the KV transfer to the decode instance
  (``I * kv_bytes_per_token`` over the link between them). Waiting time follows
  Pollaczek-Khinchine: ``P(W > 0) = rho`` and, given a wait, an exponential tail with mean
  ``E[W] / rho`` where ``E[W] = lambda E[S^2] / (2 (1 - rho))``. TTFT attainment averages
  ``P(W <= SLO - response(I))`` over the input-length distribution.
* **Decode instance** -- continuous batching: by Little's law the batch holds
  ``B = lambda_d * E[O] * TPOT(B)`` sequences (fixed point, TPOT increasing in B); the number
  in service fluctuates as Poisson(B) (M/G/inf), so TPOT attainment is
  ``P(TPOT(b) <= SLO)`` for ``b ~ Poisson(B)``, counting a batch beyond the instance's KV
  capacity or the engine's ``max_num_seqs`` as a violation (it would preempt or queue).
* Attainment of both SLOs is the product (TTFT and TPOT are driven by different instances).

Search: every (TP, PP) layout per GPU model that fits, for prefill and decode, and every
coprime ratio ``n_p:n_d`` up to 8:1 / 1:8 within the GPU budget; goodput by bisection on the
rate. Because arrivals split evenly, ``k`` copies of a unit have ``k`` times its goodput, so
goodput per GPU depends only on the ratio; the best unit is replicated until it serves
``--rate`` (when given and the GPUs allow). OR-Tools CP-SAT then
packs the chosen instances onto hosts so that no TP group spans hosts and as many decode
instances as possible share a host (fast KV transfer) with a prefill instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
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
    transfer_time,
)
from llmplan.plan.types import InstancePlan, Plan, PlanWorkload, StagePlan

MAX_RATIO = 8  # largest prefill or decode count in a ratio unit (8:1 ... 1:8)

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec


@dataclass(frozen=True, slots=True)
class LengthStats:
    """Workload statistics: request rate (optional) and samples of input/output lengths."""

    inputs: np.ndarray
    outputs: np.ndarray
    rate: float | None = None
    source: str = "synthetic"

    @property
    def mean_input(self) -> float:
        return float(self.inputs.mean())

    @property
    def mean_output(self) -> float:
        return float(self.outputs.mean())


@dataclass(frozen=True, slots=True)
class PDRequest:
    slo_ttft_s: float = 2.0
    slo_tpot_s: float = 0.1
    attainment: float = 0.9
    max_gpus: int | None = None
    max_num_seqs: int = 256  # the engine's decode batch limit (vLLM's default)


def load_length_stats(
    trace: str | Path | None,
    input_len: int = 512,
    output_len: int = 256,
    rate: float | None = None,
    max_samples: int = 400,
) -> LengthStats:
    """From a CSV trace (TIMESTAMP, ContextTokens, GeneratedTokens) or fixed synthetic lengths."""
    if trace is None:
        return LengthStats(np.array([float(input_len)]), np.array([float(output_len)]), rate, "synthetic")
    import os

    import pandas as pd

    p = Path(trace)
    if not p.exists() and os.environ.get("LLMPLAN_DATA_DIR"):
        p = Path(os.environ["LLMPLAN_DATA_DIR"]) / trace
    if not p.exists():
        raise LlmplanError(f"trace {str(trace)!r} does not exist; pass a CSV path (or set LLMPLAN_DATA_DIR)")
    from llmplan.workload.traces import read_trace_frame, trace_columns

    need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    have = set(read_trace_frame(p).columns)
    if not need <= have:
        raise LlmplanError(
            f"trace {str(p)!r} lacks columns {sorted(need - have)}; "
            "expected TIMESTAMP,ContextTokens,GeneratedTokens"
        )
    # Bad rows (text, negative, fractional, huge counts) are refused as FILE:LINE; zero-length
    # requests are valid trace rows that a P:D plan has nothing to size for, so they are dropped.
    arrival, prompt_tokens, output_tokens, _ = trace_columns(p, min_output=0)
    keep = (prompt_tokens > 0) & (output_tokens > 0)
    if keep.sum() < 2:
        raise LlmplanError(f"trace {str(p)!r} has fewer than 2 usable requests")
    span = float(arrival[keep].max() - arrival[keep].min())
    trace_rate = (int(keep.sum()) - 1) / span if span > 0 else None
    df = pd.DataFrame({"ContextTokens": prompt_tokens[keep], "GeneratedTokens": output_tokens[keep]})
    # Quantiles keep the distribution's shape at a fixed cost per evaluation.
    q = np.linspace(0.5 / max_samples, 1 - 0.5 / max_samples, min(max_samples, len(df)))
    ins = np.quantile(df.ContextTokens.to_numpy(float), q)
    outs = np.quantile(df.GeneratedTokens.to_numpy(float), np.random.default_rng(0).permutation(q))
    return LengthStats(ins, outs, rate if rate is not None else trace_rate, str(p))


@dataclass(slots=True)
class Layout:
    """One instance layout: TP x PP on GPUs of one model."""

    gpu_model: str
    tp: int
    pp: int
    cost: InstanceCost

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def label(self) -> str:
        return f"{self.gpu_model} TP{self.tp}xPP{self.pp}"


@dataclass(slots=True)
class PDOption:
    prefill: Layout
    decode: Layout
    n_prefill: int
    n_decode: int
    goodput: float  # req/s
    attainment: float  # at goodput
    ttft_att: float
    tpot_att: float
    kv_link: str

    @property
    def gpus(self) -> int:
        return self.n_prefill * self.prefill.gpus + self.n_decode * self.decode.gpus

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.gpus

    @property
    def replicas(self) -> int:
        return math.gcd(self.n_prefill, self.n_decode)

    @property
    def ratio(self) -> str:
        k = self.replicas
        return f"{self.n_prefill // k}:{self.n_decode // k}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefill": self.prefill.label(),
            "decode": self.decode.label(),
            "n_prefill": self.n_prefill,
            "n_decode": self.n_decode,
            "ratio": f"{self.n_prefill}:{self.n_decode}",
            "gpus": self.gpus,
            "goodput_rps": self.goodput,
            "goodput_per_gpu_rps": self.per_gpu,
            "attainment": self.attainment,
            "ttft_attainment": self.ttft_att,
            "tpot_attainment": self.tpot_att,
            "kv_link": self.kv_link,
        }


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


# ---- the analytic model --------------------------------------------------------------------


class _PrefillModel:
    def __init__(
        self, layout: Layout, stats: LengthStats, kv_link: LinkPerf, spec: ModelSpec, params: CostParams
    ):
        c = layout.cost
        self.total = np.array([c.prefill_time(int(i)) for i in stats.inputs])
        # The cost model (and so the simulator) runs PP stages back to back for a batch, so a
        # prompt occupies the whole instance: service time = full prefill time.
        self.service = self.total
        self.kv = np.array(
            [transfer_time(i * spec.kv_bytes_per_token, kv_link, params) for i in stats.inputs]
        )
        self.es = float(self.service.mean())
        self.es2 = float((self.service**2).mean())

    def attainment(self, lam: float, slo: float) -> float:
        rho = lam * self.es
        if rho >= 1:
            return 0.0
        slack = slo - self.total - self.kv
        if lam <= 0:
            return float((slack >= 0).mean())
        ew = lam * self.es2 / (2 * (1 - rho))
        p_wait_le = np.where(slack < 0, 0.0, 1 - rho * np.exp(-rho * np.maximum(slack, 0) / max(ew, 1e-12)))
        return float(p_wait_le.mean())


class _DecodeModel:
    def __init__(self, layout: Layout, stats: LengthStats, slo: float, max_num_seqs: int = 256):
        cost = layout.cost
        ctx = stats.mean_input + stats.mean_output / 2
        self.eo = stats.mean_output
        by_kv = int(cost.kv_capacity_tokens() // max(1.0, stats.mean_input + stats.mean_output))
        self.max_b = max(1, min(by_kv, max_num_seqs))
        top = 2 * self.max_b + 64
        # TPOT for every batch size up to twice what fits (beyond capacity it would preempt)
        self.tpot_arr = np.array([cost.decode_time(b, ctx) if b else 0.0 for b in range(top + 1)])
        self.ok = (self.tpot_arr <= slo) & (np.arange(top + 1) <= self.max_b)
        self.ok[0] = False
        self.logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, top + 1)))])

    def tpot(self, b: int) -> float:
        return float(self.tpot_arr[min(max(1, b), len(self.tpot_arr) - 1)])

    def batch(self, lam: float) -> float | None:
        """Smallest B with B >= lam * E[O] * TPOT(B) (Little's law), or None when none fits."""
        need = lam * self.eo * self.tpot_arr
        idx = np.nonzero(np.arange(len(need)) >= need)[0]
        idx = idx[idx >= 1]
        return float(idx[0]) if len(idx) else None

    def attainment(self, lam: float) -> float:
        if lam <= 0:
            return float(self.ok[1])
        b = self.batch(lam)
        if b is None:
            return 0.0
        # The number of other sequences in service is Poisson(b) (M/G/inf); a request sees k + 1.
        ks = np.arange(len(self.ok) - 1)
        p = np.exp(ks * math.log(b) - b - self.logfact[: len(ks)])
        return float((p * self.ok[1:]).sum() / max(p.sum(), 1e-300))


def _goodput(
    pm: _PrefillModel, dm: _DecodeModel, n_p: int, n_d: int, req: PDRequest
) -> tuple[float, float, float, float]:
    def att(lam: float) -> tuple[float, float, float]:
        a = pm.attainment(lam / n_p, req.slo_ttft_s)
        b = dm.attainment(lam / n_d)
        return a * b, a, b

    if att(1e-9)[0] < req.attainment:
        return 0.0, *att(1e-9)
    hi = n_p / pm.es  # prefill saturation bounds goodput
    lo = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if att(mid)[0] >= req.attainment:
            lo = mid
        else:
            hi = mid
    return lo, *att(lo)


def _fewest_gpus(
    pm: _PrefillModel, dm: _DecodeModel, pl: Layout, dl: Layout, rate: float, req: PDRequest, budget: int
) -> tuple[int, int, float] | None:
    """Fewest GPUs of (n_p x ``pl``, n_d x ``dl``) whose predicted attainment at ``rate`` meets the
    target: (n_p, n_d, attainment), or None within ``budget``. Arrivals split evenly; each side's
    attainment only grows with its instance count, so for each n_p the first n_d that passes is
    that n_p's cheapest, and n_p stops once it alone costs more than the best found."""
    target = req.attainment
    best: tuple[int, int, int, float] | None = None
    for n_p in range(1, budget // pl.gpus + 1):
        a = pm.attainment(rate / n_p, req.slo_ttft_s)
        if a < target:
            continue
        if best is not None and n_p * pl.gpus + dl.gpus > best[0]:
            break
        for n_d in range(1, (budget - n_p * pl.gpus) // dl.gpus + 1):
            total = n_p * pl.gpus + n_d * dl.gpus
            if best is not None and total > best[0]:
                break
            att = a * dm.attainment(rate / n_d)
            if att >= target:
                if best is None or (total, -att) < (best[0], -best[3]):
                    best = (total, n_p, n_d, att)
                break
    return None if best is None else (best[1], best[2], best[3])


def _capacity(att, target: float, hi: float) -> float:
    """Highest per-instance rate at which ``att(rate) >= target`` (0 when even idle fails)."""
    if att(1e-9) < target:
        return 0.0
    lo = 0.0
    for _ in range(30):
        mid = (lo + hi) / 2
        if att(mid) >= target:
            lo = mid
        else:
            hi = mid
    return lo


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


def _layouts(spec: ModelSpec, graph: nx.Graph, groups, params: CostParams) -> list[tuple[Layout, list[str]]]:
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


def plan_pd(
    spec: ModelSpec,
    graph: nx.Graph,
    stats: LengthStats,
    req: PDRequest,
    params: CostParams = DEFAULT_PARAMS,
    gpus: list[str] | None = None,
    topology: str = "",
) -> PDResult:
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
    options: list[PDOption] = []
    dmodels: dict[int, _DecodeModel] = {}
    dcaps: dict[int, float] = {}

    def threshold() -> float:
        """Per-GPU goodput an option must beat to enter the top five (winner + runner-ups)."""
        if len(options) < 5:
            return 0.0
        return sorted((o.per_gpu for o in options), reverse=True)[4]

    best_ttft = best_tpot = math.inf
    capacity: tuple[PDOption, float] | None = None
    for pl, pids in layouts:
        for dl, dids in layouts:
            if pl.gpu_model != dl.gpu_model and len(groups) == 1:
                continue
            # KV moves from the prefill instance to a decode instance placed right after it
            # (same host when both fit, else on the next host).
            flat = [g for h in groups[dl.gpu_model].values() for g in h]
            dst = flat[pl.gpus] if pl.gpu_model == dl.gpu_model and pl.gpus < len(flat) else dids[0]
            kv_link = best_link(graph, pids[0], dst) if dst != pids[0] else LinkPerf(math.inf, 0.0, "SELF")
            pm = _PrefillModel(pl, stats, kv_link, spec, params)
            dm = dmodels.setdefault(id(dl), _DecodeModel(dl, stats, req.slo_tpot_s, req.max_num_seqs))
            best_ttft = min(best_ttft, float(np.quantile(pm.total + pm.kv, req.attainment)))
            best_tpot = min(best_tpot, dm.tpot(1))
            # Arrivals split evenly, so (k*n_p, k*n_d) has k times the goodput of (n_p, n_d):
            # goodput per GPU depends on the ratio only. Search coprime ratios, then replicate.
            # Both attainments are <= 1, so each side alone bounds the goodput:
            # goodput <= min(n_p * cap_p, n_d * cap_d); ratios whose bound cannot beat the
            # current runner-up threshold are skipped (exact pruning).
            cap_p = _capacity(lambda r, pm=pm: pm.attainment(r, req.slo_ttft_s), req.attainment, 1.0 / pm.es)
            if id(dl) not in dcaps:
                dcaps[id(dl)] = _capacity(
                    dm.attainment, req.attainment, dm.max_b / (dm.eo * dm.tpot(1)) + 1.0
                )
            cap_d = dcaps[id(dl)]
            if stats.rate:
                found = _fewest_gpus(pm, dm, pl, dl, stats.rate, req, budget)
                if found is not None:
                    n_p, n_d, a_rate = found
                    gpus_needed = n_p * pl.gpus + n_d * dl.gpus
                    if capacity is None or (gpus_needed, -a_rate) < (capacity[0].gpus, -capacity[1]):
                        g, a, ta, da = _goodput(pm, dm, n_p, n_d, req)
                        capacity = (PDOption(pl, dl, n_p, n_d, g, a, ta, da, kv_link.kind), a_rate)
            cands = []
            for n_p in range(1, min(MAX_RATIO, budget // pl.gpus) + 1):
                for n_d in range(1, min(MAX_RATIO, (budget - n_p * pl.gpus) // dl.gpus) + 1):
                    if math.gcd(n_p, n_d) == 1:
                        ub = min(n_p * cap_p, n_d * cap_d) / (n_p * pl.gpus + n_d * dl.gpus)
                        cands.append((ub, n_p, n_d))
            cands.sort(reverse=True)
            for ub, n_p, n_d in cands:
                if ub <= 0 or ub < threshold():
                    break
                g, a, ta, da = _goodput(pm, dm, n_p, n_d, req)
                if g > 0:
                    options.append(PDOption(pl, dl, n_p, n_d, g, a, ta, da, kv_link.kind))
    if not options:
        parts = []
        if best_ttft > req.slo_ttft_s:
            parts.append(
                f"--slo-ttft {req.slo_ttft_s:g} s cannot be met: the best layout reaches TTFT "
                f"p{req.attainment * 100:.0f} {best_ttft:.3f} s at zero load"
            )
        if best_tpot > req.slo_tpot_s:
            parts.append(
                f"--slo-tpot {req.slo_tpot_s:g} s cannot be met: the best layout decodes at "
                f"{best_tpot:.4f} s/token at batch 1"
            )
        if not parts:
            parts.append("each SLO is reachable alone but not both at the target attainment")
        raise InfeasibleError("; ".join(parts) + "; relax the SLO or add faster GPUs")
    options.sort(key=lambda o: (-o.per_gpu, o.gpus))
    best = options[0]
    if stats.rate and best.goodput < stats.rate:
        # replicate the best unit until it serves the requested rate (within the GPU budget)
        k = min(math.ceil(stats.rate / best.goodput), budget // best.gpus)
        if k > 1:
            best = PDOption(
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
    # runner-ups: the next-best units (layout pair and ratio)
    seen, runners = (
        {(options[0].prefill.label(), options[0].decode.label(), options[0].n_prefill, options[0].n_decode)},
        [],
    )
    for o in options[1:]:
        key = (o.prefill.label(), o.decode.label(), o.n_prefill, o.n_decode)
        if key not in seen:
            seen.add(key)
            runners.append(o)
        if len(runners) == 4:
            break
    plan = _assign(spec, graph, best, groups, stats, params, topology)
    res = PDResult(best, runners, plan, req, stats)
    if capacity is not None:
        res.capacity, res.capacity_attainment = capacity
    if stats.rate:
        pm = _PrefillModel(best.prefill, stats, LinkPerf(math.inf, 0.0), spec, params)
        dm = _DecodeModel(best.decode, stats, req.slo_tpot_s, req.max_num_seqs)
        a = pm.attainment(stats.rate / best.n_prefill, req.slo_ttft_s)
        b = dm.attainment(stats.rate / best.n_decode)
        res.at_rate = {"rate": stats.rate, "attainment": a * b, "ttft_attainment": a, "tpot_attainment": b}
    return res


def _assign(
    spec: ModelSpec,
    graph: nx.Graph,
    best: PDOption,
    groups,
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
    import dataclasses

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


def render_pd(console, result: PDResult) -> None:
    from rich.table import Table

    b = result.best
    console.print(
        f"[bold]P:D plan[/] for {result.plan.model}: {b.n_prefill} prefill x {b.prefill.label()} + "
        f"{b.n_decode} decode x {b.decode.label()} = {b.gpus} GPUs, ratio {b.ratio}"
        + (f" (x{b.replicas} to serve --rate)" if b.replicas > 1 else ""),
        highlight=False,
    )
    console.print(
        f"  goodput {b.goodput:.2f} req/s ({b.per_gpu:.3f} req/s per GPU) at attainment "
        f"{b.attainment:.3f} (TTFT {b.ttft_att:.3f}, TPOT {b.tpot_att:.3f}); SLOs TTFT "
        f"{result.request.slo_ttft_s:g} s, TPOT {result.request.slo_tpot_s:g} s, target "
        f"{result.request.attainment:g}; KV transfer over {b.kv_link}",
        highlight=False,
    )
    if result.at_rate:
        r = result.at_rate
        console.print(
            f"  at {r['rate']:.2f} req/s: predicted attainment {r['attainment']:.3f}", highlight=False
        )
    rate = result.stats.rate
    if rate:
        c = result.capacity
        if c is None:
            console.print(
                f"[bold]capacity[/] at {rate:.2f} req/s: no prefill:decode split within the GPU budget "
                f"holds attainment {result.request.attainment:g}; add GPUs or relax the SLOs",
                highlight=False,
            )
        else:
            console.print(
                f"[bold]capacity[/]: the fewest GPUs holding attainment {result.request.attainment:g} at "
                f"{rate:.2f} req/s (the workload's rate): [bold]{c.gpus} GPU(s)[/] = {c.n_prefill} prefill "
                f"x {c.prefill.label()} + {c.n_decode} decode x {c.decode.label()}",
                highlight=False,
            )
            console.print(
                f"  split {c.n_prefill}:{c.n_decode}, predicted attainment {result.capacity_attainment:.3f} "
                f"at that rate; it tops out at {c.goodput:.2f} req/s ({c.per_gpu:.3f} per GPU)",
                highlight=False,
            )
            if b.gpus > c.gpus:
                console.print(
                    f"  (the plan above maximises goodput per GPU: {b.gpus} GPUs for {b.goodput:.2f} req/s, "
                    f"{b.goodput / rate:.1f}x this rate)",
                    highlight=False,
                )
    t = Table(title="runner-ups", title_justify="left")
    for col in ("prefill", "decode", "ratio", "GPUs", "goodput req/s", "per GPU", "attainment"):
        t.add_column(col)
    for o in result.runners_up:
        t.add_row(
            o.prefill.label(),
            o.decode.label(),
            f"{o.n_prefill}:{o.n_decode}",
            str(o.gpus),
            f"{o.goodput:.2f}",
            f"{o.per_gpu:.3f}",
            f"{o.attainment:.3f}",
        )
    console.print(t)
    it = Table(title="instances", title_justify="left")
    for col in (
        "#",
        "role",
        "GPUs",
        "stages x TP",
        "weights GiB/GPU",
        "KV GiB/GPU",
        "prefill ms",
        "decode ms (b=1)",
    ):
        it.add_column(col)
    for i, inst in enumerate(result.plan.instances):
        st = inst.stages
        it.add_row(
            str(i),
            inst.role,
            ",".join(inst.gpus),
            f"{len(st)} x {len(st[0].gpus)}",
            f"{max(s.weights_gib for s in st):.2f}",
            f"{min(s.kv_gib for s in st):.2f}",
            f"{sum(s.prefill_s for s in st) * 1e3:.2f}",
            f"{sum(s.decode_s for s in st) * 1e3:.3f}",
        )
    console.print(it)
    if result.validation:
        v = result.validation
        console.print(
            f"  validate: at {v['rate']:.2f} req/s ({v['requests']} requests) predicted attainment "
            f"{v['predicted_attainment']:.3f}, simulated {v['simulated_attainment']:.3f} (TTFT "
            f"{v['predicted_ttft_attainment']:.3f} vs {v['simulated_ttft_attainment']:.3f}, TPOT "
            f"{v['predicted_tpot_attainment']:.3f} vs {v['simulated_tpot_attainment']:.3f})",
            highlight=False,
        )
    for n in result.notes:
        console.print(f"  note: {n}", highlight=False)
