"""Every layer kind through the operator model: MoE, MLA and quantised weights.

Dense 16-bit layers are what Vidur measured (:mod:`llmplan.opcost.ops` prices them, from measured
tables where the shape matches). Everything here is **extrapolated** from the same fitted curves:
no MoE, MLA, fp8 or int4 timings are in the published profiles.

One decoder layer at ``B`` tokens on one GPU of a TP group of ``t`` (``ep``: experts split whole
over the group, EP = ``t``):

* attention projections: QKV and O GEMMs; MLA's ``q_a`` (``h -> q_lora``, replicated),
  ``q_b`` (``q_lora -> heads (nope + rope) / t``), ``kv_a`` (``h -> kv_lora + rope``,
  replicated), ``kv_b`` (``kv_lora -> heads (nope + v) / t``) and O (``heads v / t -> h``);
* MLP: dense gate+up and down GEMMs; an MoE layer: the router GEMM (``h -> E``, 16-bit,
  replicated), shared experts as one dense MLP (``/ t`` under TP, whole on every GPU under EP),
  routed experts as grouped GEMMs (:meth:`OpModel.expert_gemm_time`: ``E (1 - (1 - k/E)^B)``
  distinct experts, ``B k / E`` tokens each once all are touched);
* elementwise ops (norms, RoPE, activation, adds) by bytes, as for dense layers;
* attention: prefill FLOPs at a FlashAttention efficiency, decode reads of the KV cache at its
  own element size (fp8 KV reads half the bytes).

Precision (:func:`weight_precision`): fp8 / int8 weights with a tensor path on the GPU run W8A8 at
its fp8 / int8 peak times the fitted compute efficiency; fp8 without one (A100) and int4
(AWQ/GPTQ) are weight-only: 16-bit compute, smaller weight reads. Embeddings, the router and
the LM head stay 16-bit. A model with both layer kinds (DeepSeek's first dense layers) costs
the mean over its layers, as every other per-layer term of the planner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmplan.opcost.ops import OpModel
from llmplan.opcost.profiles import PER_LAYER

if TYPE_CHECKING:
    from llmplan.models.spec import ModelSpec
    from llmplan.opcost.gpu import GpuPeaks


@dataclass(frozen=True, slots=True)
class WeightPrecision:
    """How a layer's weight GEMMs run: bytes per weight element and the FLOP/s they run at."""

    weight_bytes: float
    peak: float
    kind: str  # "16-bit" | "W8A8" | "weight-only"


def weight_precision(spec: ModelSpec, gpu: GpuPeaks) -> WeightPrecision:
    peak = gpu.matmul_flops(spec)
    wb = float(spec.weight_param_bytes)
    if wb >= spec.dtype_bytes and peak == gpu.flops:
        return WeightPrecision(wb, peak, "16-bit")
    return WeightPrecision(wb, peak, "W8A8" if peak != gpu.flops else "weight-only")


def gemm_ops(spec: ModelSpec, tp: int, moe: bool, ep: bool = False) -> dict[str, tuple[float, float]]:
    """(N, K) of each plain GEMM of one layer on one GPU (routed experts and the router apart)."""
    h, a, t = spec.hidden_size, spec.num_attention_heads, tp
    out: dict[str, tuple[float, float]] = {}
    if spec.is_mla:
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        if spec.q_lora_rank:
            out["mla_q_a"] = (spec.q_lora_rank, h)
            out["mla_q_b"] = (a * qk / t, spec.q_lora_rank)
        else:
            out["mla_q"] = (a * qk / t, h)
        out["mla_kv_a"] = (spec.kv_lora_rank + spec.qk_rope_head_dim, h)
        out["mla_kv_b"] = (a * (spec.qk_nope_head_dim + spec.v_head_dim) / t, spec.kv_lora_rank)
        out["attn_post_proj"] = (h, a * spec.v_head_dim / t)
    else:
        d, g = spec.head_dim, spec.num_key_value_heads
        out["attn_pre_proj"] = ((a + 2 * g) * d / t, h)
        out["attn_post_proj"] = (h, a * d / t)
    up = 2 if spec.gated_mlp else 1
    if not moe:
        out["mlp_up_proj"] = (up * spec.intermediate_size / t, h)
        out["mlp_down_proj"] = (h, spec.intermediate_size / t)
        return out
    shared = spec.num_shared_experts * spec.moe_intermediate_size + spec.shared_expert_intermediate_size
    if shared:
        ts = 1 if ep else t  # EP holds the shared experts whole on every GPU
        out["shared_up_proj"] = (2 * shared / ts, h)
        out["shared_down_proj"] = (h, shared / ts)
    return out


def _small_ops(om: OpModel, spec: ModelSpec, m: float, tp: int, moe: bool) -> float:
    h, b = spec.hidden_size, spec.dtype_bytes
    a_loc = spec.num_attention_heads / tp
    if spec.is_mla:
        rope = 2 * a_loc * spec.qk_rope_head_dim * b + 2 * spec.qk_rope_head_dim * b
    else:
        rope = 2 * (a_loc + max(1, math.ceil(spec.num_key_value_heads / tp))) * spec.head_dim * b
    if moe:
        inter = (
            spec.num_experts_per_tok * spec.moe_intermediate_size
            + spec.num_shared_experts * spec.moe_intermediate_size
            + spec.shared_expert_intermediate_size
        )
    else:
        inter = spec.intermediate_size
    act = (3 if spec.gated_mlp else 2) * inter / tp * b
    norms = max(2, spec.norms_per_layer)
    t = (norms / 2) * (
        om.small_op_time("input_layernorm", m, 2 * h * b)
        + om.small_op_time("post_attention_layernorm", m, 2 * h * b)
    )
    t += om.small_op_time("attn_rope", m, rope) + om.small_op_time("mlp_act", m, act)
    return t + PER_LAYER["add"] * om.small_op_time("add", m, 3 * h * b)


def layer_ops_general(
    om: OpModel, spec: ModelSpec, gpu: GpuPeaks, m: float, tp: int = 1, ep: bool = False, moe: bool = False
) -> dict[str, float]:
    """Seconds of each non-attention operator of one layer (``moe``: an MoE layer) at ``m`` tokens."""
    if m <= 0:
        return {}
    wp = weight_precision(spec, gpu)
    q = {"weight_bytes": wp.weight_bytes, "peak": wp.peak}
    out = {op: om.gemm_time(op, m, n, k, **q) for op, (n, k) in gemm_ops(spec, tp, moe, ep).items()}
    if moe:
        h, e, ie = spec.hidden_size, spec.num_experts, spec.moe_intermediate_size
        ep_on = ep and tp > 1
        te = 1 if ep_on else tp  # EP: whole experts, E / t of them per GPU; TP: every expert's slice
        local = e / tp if ep_on else e
        k = spec.num_experts_per_tok
        out["router"] = om.gemm_time("router", m, e, h)  # 16-bit gate, replicated
        out["experts_up_proj"] = om.expert_gemm_time("experts_up_proj", m, 2 * ie / te, h, e, k, local, **q)
        out["experts_down_proj"] = om.expert_gemm_time("experts_down_proj", m, h, ie / te, e, k, local, **q)
    out["small_ops"] = _small_ops(om, spec, m, tp, moe)
    return out


def layer_nonattn_general(
    om: OpModel, spec: ModelSpec, gpu: GpuPeaks, m: float, tp: int = 1, ep: bool = False
) -> float:
    """Non-attention time of one layer, mean over the model's layer kinds (dense and MoE)."""
    n = spec.num_hidden_layers
    share = spec.moe_layers / n if spec.is_moe else 0.0
    t = 0.0
    if share < 1:
        t += (1 - share) * sum(layer_ops_general(om, spec, gpu, m, tp, ep, False).values())
    if share > 0:
        t += share * sum(layer_ops_general(om, spec, gpu, m, tp, ep, True).values())
    return t


def attention_general(
    om: OpModel,
    spec: ModelSpec,
    tp: int,
    prefill_tokens: float,
    prefill_pairs: float,
    decode_seqs: float,
    decode_ctx: float,
) -> float:
    """Attention of one layer from the spec's own sizes (MLA latent, fp8 KV): the same terms as
    :meth:`OpModel.attention_time` (a spec-sheet estimate; no attention timings were measured)."""
    kv_split = max(1, min(tp, spec.kv_split_heads))
    kv_tok = spec.kv_bytes_per_token_layer / kv_split
    flops_pair = spec.attn_flops_per_pair / tp
    g = om.params.gemm
    t = 0.0
    if prefill_tokens > 0:
        t += g.launch_s + max(
            flops_pair * prefill_pairs / (om.peak_flops * om.attn_compute_eff),
            2 * kv_tok * prefill_tokens / (om.mem_bw * g.memory_eff),
        )
    if decode_seqs > 0:
        t += g.launch_s + max(
            kv_tok * decode_ctx / (om.mem_bw * g.memory_eff),
            flops_pair * decode_ctx / (om.peak_flops * om.attn_compute_eff),
        )
    return t
