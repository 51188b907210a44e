"""The operator model behind :mod:`llmplan.plan.costmodel` (``CostParams.cost_model == "ops"``).

:class:`StageOps` prices one pipeline stage (``layers`` decoder layers on a TP group) for an
iteration: non-attention operators (cached per token count: they depend on nothing else),
attention (prefill FLOPs, decode KV reads) and the LM head on the last stage. TP all-reduces
and PP hand-offs stay in ``InstanceCost`` (affine in tokens, :mod:`llmplan.opcost.collectives`).

Dense 16-bit decoder layers are priced per operator as measured (:func:`grounded`: measured tables
and curves fitted on them). MoE, MLA and fp8/int weights go through the same fitted curves with
their own shapes and precision (:mod:`llmplan.opcost.layers`: extrapolated, no such measurements),
so every layer kind is priced by one model and a bf16-vs-fp8 comparison no longer mixes two.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from llmplan.opcost.ops import OpModel
from llmplan.opcost.profiles import ModelDims

if TYPE_CHECKING:
    from llmplan.models.spec import ModelSpec
    from llmplan.opcost.gpu import GpuPeaks


def grounded(spec: ModelSpec) -> bool:
    """Dense attention + dense MLP layers (no MoE, no MLA) in 16-bit weights and KV: what was measured."""
    if getattr(spec, "is_moe", False) or getattr(spec, "is_mla", False):
        return False
    if getattr(spec, "head_dim", 0) * getattr(spec, "num_attention_heads", 0) != spec.hidden_size:
        return False  # ModelDims assumes head_dim = hidden / heads (Gemma, Qwen3 differ)
    return (
        getattr(spec, "weight_precision", "bf16") in ("bf16", "fp16")
        and getattr(spec, "kv_elem_bytes", 2) == 2
    )


def supports(spec: ModelSpec) -> bool:
    """Every decoder layer kind the catalog has: measured-grounded or extrapolated (see module doc)."""
    return True


def gpu_key(name: str) -> str:
    from llmplan.topology.specs import match_model

    return match_model(name) or name


@cache
def op_model_for(gpu: GpuPeaks, dtype_bytes: int = 2) -> OpModel:
    """The op model of a GPU (its own fitted curves, else the reference GPU's through its spec sheet)."""
    return OpModel.for_gpu(gpu_key(gpu.name), gpu.flops, gpu.mem_bw, dtype_bytes=dtype_bytes)


@cache
def dims_of(spec: ModelSpec) -> ModelDims:
    return ModelDims.from_spec(spec)


def layer_time_ops(
    spec: ModelSpec,
    gpu: GpuPeaks,
    tokens: float,
    attn_pairs: float,
    kv_read_tokens: float,
    tp: int = 1,
    ep: bool = False,
) -> float:
    """One decoder layer (no TP communication): operators + attention.

    ``kv_read_tokens == 0`` is a prefill of ``tokens`` tokens touching ``attn_pairs`` query-key pairs;
    otherwise ``tokens`` sequences decode one token each over ``kv_read_tokens`` KV tokens in all.
    """
    om = op_model_for(gpu, spec.dtype_bytes)
    if not grounded(spec):
        from llmplan.opcost.layers import attention_general, layer_nonattn_general

        t = layer_nonattn_general(om, spec, gpu, tokens, tp, ep)
        if kv_read_tokens > 0:
            return t + attention_general(om, spec, tp, 0, 0, tokens, kv_read_tokens)
        return t + attention_general(om, spec, tp, tokens, attn_pairs, 0, 0)
    d = dims_of(spec)
    t = om.layer_nonattn_time(d, tokens, tp)
    if kv_read_tokens > 0:
        return t + om.attention_time(d, tp, 0, 0, tokens, kv_read_tokens)
    return t + om.attention_time(d, tp, tokens, attn_pairs, 0, 0)


def head_time_ops(spec: ModelSpec, gpu: GpuPeaks, logits_tokens: float, tp: int = 1) -> float:
    return op_model_for(gpu, spec.dtype_bytes).head_time(dims_of(spec), logits_tokens, tp)


class StageOps:
    """One stage's per-iteration time from the operator model (see module docstring)."""

    __slots__ = (
        "om",
        "dims",
        "tp",
        "layers",
        "first",
        "last",
        "_na",
        "_head",
        "spec",
        "gpu",
        "ep",
        "general",
    )

    def __init__(
        self, spec: ModelSpec, gpu: GpuPeaks, tp: int, layers: int, first: bool, last: bool, ep: bool = False
    ) -> None:
        self.om = op_model_for(gpu, spec.dtype_bytes)
        self.dims = dims_of(spec)
        self.spec, self.gpu, self.ep, self.general = spec, gpu, ep, not grounded(spec)
        self.tp, self.layers, self.first, self.last = tp, layers, first, last
        self._na: dict[int, float] = {}
        self._head: dict[int, float] = {}

    def nonattn(self, tokens: int) -> float:
        v = self._na.get(tokens)
        if v is None:
            # The embedding gather (~3 us per 100 tokens on A100) is left out so that the planner's
            # per-layer sums and this per-stage total agree exactly.
            if self.general:
                from llmplan.opcost.layers import layer_nonattn_general

                per = layer_nonattn_general(self.om, self.spec, self.gpu, tokens, self.tp, self.ep)
            else:
                per = self.om.layer_nonattn_time(self.dims, tokens, self.tp)
            v = self._na[tokens] = self.layers * per
        return v

    def head(self, logits: int) -> float:
        if not self.last or logits <= 0:
            return 0.0
        v = self._head.get(logits)
        if v is None:
            v = self._head[logits] = self.om.head_time(self.dims, logits, self.tp)
        return v

    def attention(self, prefill_tokens: int, prefill_attn: float, decode_seqs: int, decode_ctx: int) -> float:
        if self.general:
            from llmplan.opcost.layers import attention_general

            return self.layers * attention_general(
                self.om, self.spec, self.tp, prefill_tokens, prefill_attn, decode_seqs, decode_ctx
            )
        return self.layers * self.om.attention_time(
            self.dims, self.tp, prefill_tokens, prefill_attn, decode_seqs, decode_ctx
        )

    def iteration(
        self,
        tokens: int,
        logits: int,
        prefill_tokens: int,
        prefill_attn: float,
        decode_seqs: int,
        decode_ctx: int,
    ) -> float:
        return (
            self.nonattn(tokens)
            + self.attention(prefill_tokens, prefill_attn, decode_seqs, decode_ctx)
            + self.head(logits)
        )
