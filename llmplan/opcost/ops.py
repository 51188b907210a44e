"""One term per operator of a decoder layer, priced from a measured table or a fitted spec-sheet curve.

Operators of one layer at ``M`` tokens on one GPU of a TP group of degree ``t``
(``h`` hidden, ``a``/``g`` query/KV heads of size ``d``, ``I`` FFN width):

=========================  ===========================================  ======================
operator                   shape                                        priced as
=========================  ===========================================  ======================
``attn_pre_proj`` (QKV)    GEMM ``M x h -> (a + 2g) d / t``             GEMM curve
``attn_post_proj`` (O)     GEMM ``M x a d / t -> h``                    GEMM curve
``mlp_up_proj``            GEMM ``M x h -> 2I / t`` (gate+up fused)     GEMM curve (MoE:
``mlp_down_proj``          GEMM ``M x I / t -> h``                      ``expert_gemm_time``)
norms, RoPE, act, 2 adds   bytes read + written                         elementwise curve
attention                  prefill FLOPs / decode KV bytes              spec sheet (no data)
TP all-reduce (x2)         ``M h`` bytes                                :mod:`.collectives`
=========================  ===========================================  ======================

GEMM curve (per GPU, fitted by ``benchmarks/fit_costmodel.py``)::

    compute = 2 M N K / (peak * eff_c) * (1 + m_half / M) / (1 - w + w * q)
    memory  = bytes(M K + K N + M N) / (bw * eff_m)
    t       = launch + (compute^p + memory^p)^(1/p)

``m_half`` is the small-M penalty (a tile of rows is computed whatever ``M``), ``q`` the wave
quantisation (tiles / (waves x SMs) with 128x128 tiles) weighted by ``w``, and ``p`` blends the
two roofs. Elementwise ops cost ``launch + bytes / (bw * eff)`` with one (launch, eff) per op.

A GPU with fitted parameters uses its own; any other GPU uses the reference GPU's efficiencies
with its own spec-sheet peak and bandwidth (the "spec-sheet-only" path). When a measured table
for the same GPU and the same GEMM shape (N, K) is loaded, its times are interpolated over M
instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmplan.opcost.params import fitted
from llmplan.opcost.profiles import GEMM_OPS, PER_LAYER, SMALL_OPS, ModelDims, OpProfile

# Streaming multiprocessors (for wave quantisation), from the vendors' whitepapers.
SM_COUNT = {
    "A100": 108, "A800": 108, "A40": 84, "A10": 72, "A6000": 84, "L40S": 142, "L40": 142, "L4": 58,
    "H100-SXM": 132, "H100-PCIe": 114, "H100-NVL": 132, "H200": 132, "H800": 132, "H20": 78,
    "RTX-3090": 82, "RTX-4090": 128, "V100": 80, "T4": 40,
}  # fmt: skip


def sm_count(gpu_key: str) -> int | None:
    for k in sorted(SM_COUNT, key=len, reverse=True):
        if gpu_key.upper().startswith(k.upper()):
            return SM_COUNT[k]
    return None


@dataclass(frozen=True, slots=True)
class GemmParams:
    launch_s: float
    compute_eff: float
    memory_eff: float
    m_half: float
    smooth_p: float
    wave_weight: float = 0.0

    def to_list(self) -> list[float]:
        return [
            self.launch_s,
            self.compute_eff,
            self.memory_eff,
            self.m_half,
            self.smooth_p,
            self.wave_weight,
        ]


@dataclass(frozen=True, slots=True)
class SmallOpParams:
    launch_s: float
    memory_eff: float


@dataclass(frozen=True, slots=True)
class GpuOpParams:
    """The fitted efficiency curves of one GPU kind."""

    gemm: GemmParams
    small: Mapping[str, SmallOpParams]
    fitted_on: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GpuOpParams:
        return cls(
            GemmParams(**d["gemm"]),
            {k: SmallOpParams(**v) for k, v in d["small"].items()},
            str(d.get("fitted_on", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        g = self.gemm
        return {
            "gemm": {
                "launch_s": g.launch_s,
                "compute_eff": g.compute_eff,
                "memory_eff": g.memory_eff,
                "m_half": g.m_half,
                "smooth_p": g.smooth_p,
                "wave_weight": g.wave_weight,
            },
            "small": {k: {"launch_s": v.launch_s, "memory_eff": v.memory_eff} for k, v in self.small.items()},
            "fitted_on": self.fitted_on,
        }


def gpu_family(gpu_key: str) -> str:
    """``"A100-SXM-80GB"`` -> ``"A100"``: one chip, one set of efficiency curves."""
    return gpu_key.split("-")[0].upper()


def fitted_gpu_params(gpu_key: str) -> tuple[GpuOpParams, bool]:
    """(params, own): the GPU's own fitted curves, else the reference GPU's (spec-sheet-only path)."""
    table = fitted()["gpus"]
    for k, v in table.items():
        if gpu_family(k) == gpu_family(gpu_key):
            return GpuOpParams.from_dict(v), True
    return GpuOpParams.from_dict(table[fitted()["reference_gpu"]]), False


# ---------------------------------------------------------------------------- shapes
def gemm_shapes(dims: ModelDims, tp: int) -> dict[str, tuple[float, float]]:
    """(N, K) of each GEMM of a layer on one GPU of a TP group."""
    h, a, g, d, i = (
        dims.hidden_size,
        dims.num_attention_heads,
        dims.num_key_value_heads,
        dims.head_dim,
        dims.intermediate_size,
    )
    up = (2 if dims.gated_mlp else 1) * i / tp
    return {
        "attn_pre_proj": ((a + 2 * g) * d / tp, h),
        "attn_post_proj": (h, a * d / tp),
        "mlp_up_proj": (up, h),
        "mlp_down_proj": (h, i / tp),
    }


def small_op_bytes_per_token(dims: ModelDims, tp: int, dtype_bytes: int = 2) -> dict[str, float]:
    """Bytes read + written per token by each elementwise op (and the embedding gather)."""
    h, a, g, d, i = (
        dims.hidden_size,
        dims.num_attention_heads,
        dims.num_key_value_heads,
        dims.head_dim,
        dims.intermediate_size,
    )
    kv_local = max(1, math.ceil(g / tp))
    return {
        "input_layernorm": 2 * h * dtype_bytes,
        "post_attention_layernorm": 2 * h * dtype_bytes,
        "attn_rope": 2 * (a / tp + kv_local) * d * dtype_bytes,
        "mlp_act": (3 if dims.gated_mlp else 2) * i / tp * dtype_bytes,
        "add": 3 * h * dtype_bytes,
        "emb": 2 * h * dtype_bytes,
    }


# ---------------------------------------------------------------------------- model
def gemm_curve(
    p: GemmParams,
    peak: float,
    bw: float,
    sms: int | None,
    m: float,
    n: float,
    k: float,
    dtype_bytes: int = 2,
    weight_bytes: float | None = None,
) -> float:
    """One GEMM ``M x K -> N``; ``weight_bytes`` per ``K x N`` weight element (quantised weights:
    fewer bytes read, activations stay at ``dtype_bytes``), ``peak`` the FLOP/s it runs at."""
    if m <= 0:
        return 0.0
    comp = 2.0 * m * n * k / (peak * p.compute_eff) * (1.0 + p.m_half / m)
    if p.wave_weight and sms:
        tiles = math.ceil(m / 128) * math.ceil(n / 128)
        waves = math.ceil(tiles / sms)
        q = tiles / (waves * sms)
        comp /= 1.0 - p.wave_weight + p.wave_weight * q
    wb = dtype_bytes if weight_bytes is None else weight_bytes
    mem = (dtype_bytes * (m * k + m * n) + wb * k * n) / (bw * p.memory_eff)
    s = p.smooth_p
    return p.launch_s + (comp**s + mem**s) ** (1.0 / s)


def gemm_curve_np(
    th: np.ndarray, peak: float, bw: float, sms: int | None, m: np.ndarray, n: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """Vectorised :func:`gemm_curve` (for fitting); ``th`` = GemmParams.to_list()."""
    launch, ec, em, mh, s, w = th
    comp = 2.0 * m * n * k / (peak * ec) * (1.0 + mh / m)
    if w and sms:
        tiles = np.ceil(m / 128) * np.ceil(n / 128)
        q = tiles / (np.ceil(tiles / sms) * sms)
        comp = comp / (1.0 - w + w * q)
    mem = 2.0 * (m * k + k * n + m * n) / (bw * em)
    return launch + (comp**s + mem**s) ** (1.0 / s)


@dataclass(slots=True)
class MeasuredTables:
    """Measured per-op times of one GPU, keyed by shape, interpolated over tokens."""

    gemm: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    small: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def from_profiles(cls, profiles: Iterable[OpProfile]) -> MeasuredTables:
        acc_g: dict[tuple[str, int, int], dict[int, float]] = {}
        acc_s: dict[tuple[str, int], dict[int, float]] = {}
        for prof in profiles:
            dims = prof.meta.dims
            for tp in sorted(set(prof.tp.tolist())):
                rows = prof.rows(tp)
                shapes = gemm_shapes(dims, tp)
                bpt = small_op_bytes_per_token(dims, tp)
                for op, arr in prof.times.items():
                    if op in shapes:
                        key: Any = (op, round(shapes[op][0]), round(shapes[op][1]))
                        acc = acc_g.setdefault(key, {})
                    elif op in bpt:
                        key = (op, round(bpt[op]))
                        acc = acc_s.setdefault(key, {})
                    else:
                        continue
                    for r in rows:
                        v = arr[r]
                        if np.isfinite(v):
                            acc.setdefault(int(prof.tokens[r]), v)
        t = cls()
        for key, acc in acc_g.items():
            ms = np.array(sorted(acc), dtype=float)
            t.gemm[key] = (ms, np.array([acc[int(x)] for x in ms]))
        for key, acc in acc_s.items():
            ms = np.array(sorted(acc), dtype=float)
            t.small[key] = (ms, np.array([acc[int(x)] for x in ms]))
        return t

    @staticmethod
    def _interp(tab: tuple[np.ndarray, np.ndarray], m: float) -> float | None:
        ms, ts = tab
        if len(ms) < 2 or m < ms[0] or m > ms[-1]:
            return None
        return float(np.interp(m, ms, ts))


@dataclass(slots=True)
class OpModel:
    """Operator times on one GPU kind: measured tables first, fitted spec-sheet curves otherwise."""

    gpu_key: str
    peak_flops: float
    mem_bw: float
    params: GpuOpParams
    own_params: bool = True
    tables: MeasuredTables | None = None
    sms: int | None = None
    attn_compute_eff: float = 0.5  # FlashAttention-2 forward, A100 (Dao 2023: 50-73% of peak); estimate
    dtype_bytes: int = 2

    @classmethod
    def for_gpu(
        cls,
        gpu_key: str,
        peak_flops: float,
        mem_bw: float,
        *,
        params: GpuOpParams | None = None,
        tables: MeasuredTables | None = None,
        dtype_bytes: int = 2,
    ) -> OpModel:
        own = True
        if params is None:
            params, own = fitted_gpu_params(gpu_key)
        return cls(
            gpu_key, peak_flops, mem_bw, params, own, tables, sm_count(gpu_key), dtype_bytes=dtype_bytes
        )

    # -- terms ------------------------------------------------------------------------------
    def gemm_time(
        self,
        op: str,
        m: float,
        n: float,
        k: float,
        *,
        weight_bytes: float | None = None,
        peak: float | None = None,
    ) -> float:
        """One GEMM. 16-bit weights at the GPU's 16-bit peak (what was measured) use a measured
        table of the same shape when one is loaded; quantised ``weight_bytes`` or another ``peak``
        (fp8/int8 tensor cores) go through the fitted curve only (extrapolated: no such data)."""
        if m <= 0:
            return 0.0
        native = (weight_bytes is None or weight_bytes == self.dtype_bytes) and (
            peak is None or peak == self.peak_flops
        )
        if native and self.tables is not None:
            tab = self.tables.gemm.get((op, round(n), round(k)))
            if tab is not None:
                v = MeasuredTables._interp(tab, m)
                if v is not None:
                    return v
        return gemm_curve(
            self.params.gemm, peak or self.peak_flops, self.mem_bw, self.sms, m, n, k, self.dtype_bytes,
            weight_bytes,
        )  # fmt: skip

    def expert_gemm_time(
        self,
        op: str,
        tokens: float,
        n: float,
        k: float,
        experts: int,
        top_k: int,
        local_experts: float | None = None,
        *,
        weight_bytes: float | None = None,
        peak: float | None = None,
    ) -> float:
        """MoE routed experts as one grouped GEMM over the tokens each expert receives.

        ``tokens`` tokens each pick ``top_k`` of ``experts`` (uniform routing): an expert is touched
        with probability ``p = 1 - (1 - k/E)^B``, so ``E p`` distinct experts run, each on
        ``B k / (E p)`` tokens (``B k / E`` once every expert is touched). This GPU holds
        ``local_experts`` of them (all under TP, ``E / ep`` under expert parallelism). One kernel:
        one launch, then each touched expert's GEMM (``N x K`` = this GPU's slice of one expert).
        """
        if tokens <= 0 or experts <= 0 or top_k <= 0:
            return 0.0
        e, kk = float(experts), float(min(top_k, experts))
        p = 1.0 - (1.0 - kk / e) ** tokens
        per_expert = tokens * kk / (e * p)
        touched = (e if local_experts is None else float(local_experts)) * p
        g = self.params.gemm
        one = gemm_curve(
            g, peak or self.peak_flops, self.mem_bw, None, per_expert, n, k, self.dtype_bytes, weight_bytes
        )
        return g.launch_s + touched * (one - g.launch_s)

    def small_op_time(self, op: str, m: float, bytes_per_token: float) -> float:
        if m <= 0:
            return 0.0
        if self.tables is not None:
            tab = self.tables.small.get((op, round(bytes_per_token)))
            if tab is not None:
                v = MeasuredTables._interp(tab, m)
                if v is not None:
                    return v
        p = self.params.small.get(op) or self.params.small["add"]
        return p.launch_s + m * bytes_per_token / (self.mem_bw * p.memory_eff)

    def layer_ops(self, dims: ModelDims, m: float, tp: int = 1) -> dict[str, float]:
        """Seconds of each non-attention op of one layer at ``m`` tokens (counted per layer)."""
        out = {op: self.gemm_time(op, m, n, k) for op, (n, k) in gemm_shapes(dims, tp).items()}
        bpt = small_op_bytes_per_token(dims, tp, self.dtype_bytes)
        for op in SMALL_OPS:
            out[op] = PER_LAYER[op] * self.small_op_time(op, m, bpt[op])
        return out

    def layer_nonattn_time(self, dims: ModelDims, m: float, tp: int = 1) -> float:
        return sum(self.layer_ops(dims, m, tp).values())

    def embedding_time(self, dims: ModelDims, m: float, tp: int = 1) -> float:
        return self.small_op_time("emb", m, small_op_bytes_per_token(dims, tp, self.dtype_bytes)["emb"])

    def head_time(self, dims: ModelDims, m: float, tp: int = 1) -> float:
        """Final norm + LM head GEMM for ``m`` positions."""
        if m <= 0:
            return 0.0
        norm = self.small_op_time("input_layernorm", m, 2 * dims.hidden_size * self.dtype_bytes)
        return norm + self.gemm_time("lm_head", m, dims.vocab_size / tp, dims.hidden_size)

    def attention_time(
        self,
        dims: ModelDims,
        tp: int,
        prefill_tokens: float,
        prefill_pairs: float,
        decode_seqs: float,
        decode_ctx: float,
    ) -> float:
        """Attention of one layer: prefill is compute-bound (FlashAttention), paged decode reads the KV.

        No attention timings are in the published profiles, so both are spec-sheet estimates:
        compute at ``attn_compute_eff`` of peak, KV reads at the GEMM curve's memory efficiency.
        """
        a_loc = dims.num_attention_heads / tp
        kv_loc = max(1, math.ceil(dims.num_key_value_heads / tp))
        d = dims.head_dim
        t = 0.0
        if prefill_tokens > 0:
            flops = 4.0 * a_loc * d * prefill_pairs
            kv_bytes = 2 * kv_loc * d * self.dtype_bytes * prefill_tokens * 2  # read q/k/v, write kv
            t += self.params.gemm.launch_s + max(
                flops / (self.peak_flops * self.attn_compute_eff),
                kv_bytes / (self.mem_bw * self.params.gemm.memory_eff),
            )
        if decode_seqs > 0:
            kv_read = 2 * kv_loc * d * self.dtype_bytes * decode_ctx
            flops = 4.0 * a_loc * d * decode_ctx
            t += self.params.gemm.launch_s + max(
                kv_read / (self.mem_bw * self.params.gemm.memory_eff),
                flops / (self.peak_flops * self.attn_compute_eff),
            )
        return t


GEMM_AND_SMALL = GEMM_OPS + SMALL_OPS
