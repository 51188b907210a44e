"""The operator model behind :mod:`llmplan.plan.costmodel` (``CostParams.cost_model == "ops"``).

:class:`StageOps` prices one pipeline stage (``layers`` decoder layers on a TP group) for an
iteration: non-attention operators (cached per token count: they depend on nothing else),
attention (prefill FLOPs, decode KV reads) and the LM head on the last stage. TP all-reduces
and PP hand-offs stay in ``InstanceCost`` (affine in tokens, :mod:`llmplan.opcost.collectives`).

Dense 16-bit decoder layers are priced per operator. MoE, MLA and fp8/int weights are not (no
measurements; MoE GEMM shapes are not wired yet, :meth:`OpModel.expert_gemm_time` is the hook),
so :func:`supports` says False and the caller keeps the roofline for them.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from llmplan.opcost.ops import OpModel
from llmplan.opcost.profiles import ModelDims

if TYPE_CHECKING:
    from llmplan.models.spec import ModelSpec
    from llmplan.plan.costmodel import GpuPerf


def supports(spec: ModelSpec) -> bool:
    """Dense attention + dense MLP layers (no MoE, no MLA) in 16-bit weights and KV: what was measured."""
    if getattr(spec, "is_moe", False) or getattr(spec, "is_mla", False):
        return False
    return (
        getattr(spec, "weight_precision", "bf16") in ("bf16", "fp16")
        and getattr(spec, "kv_elem_bytes", 2) == 2
    )


def gpu_key(name: str) -> str:
    from llmplan.topology.specs import match_model

    return match_model(name) or name


@cache
def op_model_for(gpu: GpuPerf, dtype_bytes: int = 2) -> OpModel:
    """The op model of a GPU (its own fitted curves, else the reference GPU's through its spec sheet)."""
    return OpModel.for_gpu(gpu_key(gpu.name), gpu.flops, gpu.mem_bw, dtype_bytes=dtype_bytes)


@cache
def dims_of(spec: ModelSpec) -> ModelDims:
    return ModelDims.from_spec(spec)


def layer_time_ops(
    spec: ModelSpec, gpu: GpuPerf, tokens: float, attn_pairs: float, kv_read_tokens: float, tp: int = 1
) -> float:
    """One decoder layer (no TP communication): operators + attention.

    ``kv_read_tokens == 0`` is a prefill of ``tokens`` tokens touching ``attn_pairs`` query-key pairs;
    otherwise ``tokens`` sequences decode one token each over ``kv_read_tokens`` KV tokens in all.
    """
    om = op_model_for(gpu, spec.dtype_bytes)
    d = dims_of(spec)
    t = om.layer_nonattn_time(d, tokens, tp)
    if kv_read_tokens > 0:
        return t + om.attention_time(d, tp, 0, 0, tokens, kv_read_tokens)
    return t + om.attention_time(d, tp, tokens, attn_pairs, 0, 0)


def head_time_ops(spec: ModelSpec, gpu: GpuPerf, logits_tokens: float, tp: int = 1) -> float:
    return op_model_for(gpu, spec.dtype_bytes).head_time(dims_of(spec), logits_tokens, tp)


class StageOps:
    """One stage's per-iteration time from the operator model (see module docstring)."""

    __slots__ = ("om", "dims", "tp", "layers", "first", "last", "_na", "_head")

    def __init__(self, spec: ModelSpec, gpu: GpuPerf, tp: int, layers: int, first: bool, last: bool) -> None:
        self.om = op_model_for(gpu, spec.dtype_bytes)
        self.dims = dims_of(spec)
        self.tp, self.layers, self.first, self.last = tp, layers, first, last
        self._na: dict[int, float] = {}
        self._head: dict[int, float] = {}

    def nonattn(self, tokens: int) -> float:
        v = self._na.get(tokens)
        if v is None:
            # The embedding gather (~3 us per 100 tokens on A100) is left out so that the planner's
            # per-layer sums and this per-stage total agree exactly.
            v = self._na[tokens] = self.layers * self.om.layer_nonattn_time(self.dims, tokens, self.tp)
        return v

    def head(self, logits: int) -> float:
        if not self.last or logits <= 0:
            return 0.0
        v = self._head.get(logits)
        if v is None:
            v = self._head[logits] = self.om.head_time(self.dims, logits, self.tp)
        return v

    def attention(self, prefill_tokens: int, prefill_attn: float, decode_seqs: int, decode_ctx: int) -> float:
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
