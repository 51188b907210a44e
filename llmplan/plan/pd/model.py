"""The P:D analytic model: workload lengths, the prefill M/G/1 queue, the decode batch.

Every time comes from :mod:`llmplan.plan.costmodel`; the package docstring
(:mod:`llmplan.plan.pd`) states the model. This module holds the types a search and a
placement share (:class:`Layout`, :class:`PDOption`) and the attainment/goodput arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from llmplan.plan.costmodel import CostParams, InstanceCost, LinkPerf, transfer_time

if TYPE_CHECKING:
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
    from llmplan.workload.traces import azure_lengths, resolve_trace_path

    p = resolve_trace_path(trace)
    prompt_tokens, output_tokens, trace_rate = azure_lengths(p)
    # Quantiles keep the distribution's shape at a fixed cost per evaluation.
    q = np.linspace(0.5 / max_samples, 1 - 0.5 / max_samples, min(max_samples, len(prompt_tokens)))
    ins = np.quantile(prompt_tokens.astype(float), q)
    outs = np.quantile(output_tokens.astype(float), np.random.default_rng(0).permutation(q))
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
