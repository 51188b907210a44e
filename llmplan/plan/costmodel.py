"""The one cost model: prefill/decode time per layer and stage transfers.

By default (``CostParams.cost_model == "ops"``) every layer is priced per operator from curves
fitted on measured GPU profiles (dense 16-bit layers as measured; MoE, MLA and fp8/int weights
extrapolated through the same curves, :mod:`llmplan.opcost.layers`), and TP all-reduces / PP
hand-offs from a fit on measured NCCL timings (:mod:`llmplan.opcost`, docs/calibrate.md);
``cost_model="roofline"`` (or ``LLMPLAN_COST_MODEL=roofline``) is the roofline described below.

The planner (HELR, P:D) and the simulator both price work here; a calibration profile
measured on a real engine can replace it behind the same :class:`IterationCost` protocol.

Model
-----
Every decoder layer on a GPU costs ``max(FLOPs / (peak * compute_eff), bytes / (bw * memory_eff))``
plus a fixed launch overhead, where

* FLOPs  = ``2 * linear_params * new_tokens + 4 * heads * head_dim * query_key_pairs``
* bytes  = weights of the layer (read once per iteration, whatever the batch)
  + KV read (context tokens of decoding sequences) + KV written (every new token)
  + activations (``4 * hidden`` values in and out per token).

Tensor parallelism of degree ``t`` divides weights, FLOPs and KV (KV heads are replicated when
there are fewer of them than ``t``) and adds two ring all-reduces of the activations per layer.
Pipeline stages run one after another for one batch, so an iteration costs the sum of stage
times plus one activation transfer per stage boundary (``latency + bytes / (bw * link_eff)``
over the best path between the two GPUs). The LM head (logits for one token per sequence)
runs on the last stage. Defaults for the efficiency factors are in :class:`CostParams` and
are documented there; ``llmplan calibrate`` may replace them with measured values.

API
---
* :class:`GpuPerf`, :class:`LinkPerf` -- what one GPU / one GPU-to-GPU path offers;
  ``GpuPerf.from_attrs(graph.nodes["GPU0"])``, :func:`best_link(graph, a, b)`.
* :func:`layer_time`, :func:`prefill_layer_time`, :func:`decode_layer_time`,
  :func:`transfer_time`, :func:`allreduce_time` -- the building blocks (seconds).
* :class:`StageSpec` -- layers ``[start, end)`` on a TP group of GPUs.
* :class:`InstanceCost` -- implements :class:`IterationCost`: ``iteration_time(BatchShape)`` is
  O(stages) with all coefficients precomputed. Build with ``InstanceCost.from_plan(plan, graph)``,
  ``InstanceCost.single(spec, gpu_attrs, tp=1, pp=1)`` or ``InstanceCost(spec, stages, links)``.
  ``kv_capacity_tokens()`` / ``kv_capacity_blocks(block_size)`` size the paged KV cache;
  ``prefill_time(tokens)`` / ``decode_time(batch, ctx)`` are convenience wrappers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec
    from llmplan.plan.types import Plan

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Aggregate shape of one iteration; O(1) to price, whatever the batch size.

    prefill_tokens:  new prompt tokens computed this step (sum of chunk lengths)
    prefill_attn:    sum over prefilling sequences of new_tokens * (context + new_tokens / 2),
                     i.e. the number of query-key pairs the causal attention touches
    decode_seqs:     sequences producing one token this step
    decode_ctx:      sum of their context lengths (KV tokens read by attention)
    """

    prefill_tokens: int = 0
    prefill_attn: float = 0.0
    decode_seqs: int = 0
    decode_ctx: int = 0


class IterationCost(Protocol):
    def iteration_time(self, shape: BatchShape) -> float:
        """Seconds one iteration of this shape takes on the instance."""
        ...


@runtime_checkable
class KVSizedCost(IterationCost, Protocol):
    """An :class:`IterationCost` that also sizes the instance's paged KV cache (the planner's
    :class:`InstanceCost` does, from the memory its GPUs have left after the weights). Costs that
    do not (a fitted profile, a test's linear cost) leave it to the caller's ``num_blocks``."""

    def kv_capacity_blocks(self, block_size: int = 16) -> int:
        """KV blocks of ``block_size`` tokens the instance holds."""
        ...


@dataclass(frozen=True, slots=True)
class CostParams:
    """Efficiency factors and overheads of the roofline (defaults are typical of vLLM on Ampere/Hopper).

    compute_eff: fraction of the datasheet's dense BF16 peak that large GEMMs reach (~0.6).
    memory_eff: fraction of peak HBM bandwidth that weight/KV streaming reaches (~0.8).
    link_eff: fraction of a link's nominal bandwidth that NCCL send/recv reaches (~0.8).
    layer_overhead_s: kernel-launch and small-op cost per layer per iteration.
    iteration_overhead_s: scheduler, sampling and Python cost per iteration (the serving engine's
        exposed per-step overhead; 1 ms is vLLM's figure in :mod:`llmplan.opcost.engines`).
    serving_engine: the engine these parameters model (``llmplan | vllm | sglang | trtllm``); build
        them with :func:`params_for_engine`, which sets the overhead to match.
    gpu_memory_utilization: fraction of device memory the engine may use (vLLM's default 0.9);
        the rest covers the CUDA context, NCCL buffers and allocator fragmentation.
    activation_reserve_gib: transient activation workspace per GPU (prefill peak).
    cost_model: ``"ops"`` prices each operator from measured-and-fitted curves and NCCL
        collectives from :mod:`llmplan.opcost` (the default); ``"roofline"`` is the previous
        single-roofline model with the fixed factors above (kept for comparison). The default can be
        set with ``LLMPLAN_COST_MODEL=roofline`` (e.g. to re-run a bench with the previous model).
    """

    compute_eff: float = 0.6
    memory_eff: float = 0.8
    link_eff: float = 0.8
    layer_overhead_s: float = 5e-6
    iteration_overhead_s: float = 1e-3
    gpu_memory_utilization: float = 0.9
    activation_reserve_gib: float = 0.5
    cost_model: str = field(default_factory=lambda: os.environ.get("LLMPLAN_COST_MODEL", "ops"))
    serving_engine: str = "vllm"


DEFAULT_PARAMS = CostParams()


def plan_cost_params(plan: Plan) -> CostParams:
    """The cost parameters a plan was made with (``plan.params``), else the defaults."""
    return CostParams(**plan.params) if plan.params else CostParams()


def params_for_engine(engine: str, base: CostParams | None = None) -> CostParams:
    """``CostParams`` that model ``engine``: its per-iteration overhead
    (:mod:`llmplan.opcost.engines`), its name recorded; an unknown engine is refused."""
    from llmplan.opcost.engines import engine_overhead

    e = engine_overhead(engine)
    return replace(base or DEFAULT_PARAMS, iteration_overhead_s=e.per_step_s, serving_engine=e.engine)


@dataclass(frozen=True, slots=True)
class GpuPerf:
    name: str
    flops: float  # dense BF16 FLOP/s after power-cap scaling
    mem_bw: float  # bytes/s
    memory_bytes: float
    fp8_flops: float = 0.0  # dense FP8 FLOP/s (0: no FP8 tensor path)
    int8_flops: float = 0.0  # dense INT8 OP/s (0: none)
    sm: int = 80  # compute capability x10

    def matmul_flops(self, spec: ModelSpec) -> float:
        """Peak for the decoder's weight matmuls at the spec's weight precision (precision term).

        FP8 / INT8 weights run W8A8 on the GPU's FP8 / INT8 tensor path where it has one; without
        one (FP8 on A100) and for INT4 (AWQ/GPTQ, weight-only) the matmul runs at the BF16 rate and
        only the weight reads shrink.
        """
        w = spec.weight_dtype
        if w == "fp8" and self.fp8_flops > 0:
            return self.fp8_flops
        if w == "int8" and self.int8_flops > 0:
            return self.int8_flops
        return self.flops

    def check_precision(self, spec: ModelSpec) -> None:
        """Refuse a weight/KV precision vLLM has no kernel for on this GPU (one line, the fix)."""
        from llmplan.errors import LlmplanError

        w = spec.weight_precision
        if w in ("fp8", "int4", "bf16") and self.sm < 80:
            alt = "fp16 or int8" if self.int8_flops > 0 else "fp16"
            raise LlmplanError(
                f"{self.name} (compute capability {self.sm / 10:.1f}) cannot run {w} weights in vLLM "
                f"(needs >= 8.0); use --weight-dtype {alt}, or a newer GPU"
            )
        if w == "int8" and self.int8_flops <= 0:
            raise LlmplanError(
                f"{self.name} has no INT8 tensor path for W8A8; use --weight-dtype fp16 or a newer GPU"
            )
        if spec.kv_dtype == "fp8" and self.sm < 80:
            raise LlmplanError(
                f"{self.name} (compute capability {self.sm / 10:.1f}) has no fp8 KV cache kernels; "
                "use --kv-dtype auto"
            )

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> GpuPerf:
        try:
            return cls(
                name=str(attrs.get("name") or attrs.get("model") or "gpu"),
                flops=float(attrs["bf16_tflops"]) * 1e12,
                mem_bw=float(attrs["hbm_gbps"]) * 1e9,
                memory_bytes=float(attrs["memory_gib"]) * GIB,
                fp8_flops=float(attrs.get("fp8_tflops") or 0.0) * 1e12,
                int8_flops=float(attrs.get("int8_tops") or 0.0) * 1e12,
                sm=int(attrs.get("sm") or 80),
            )
        except KeyError as exc:
            from llmplan.errors import LlmplanError

            raise LlmplanError(
                f"GPU attributes lack {exc.args[0]!r}; build the topology with llmplan.topology.load_topology"
            ) from None

    def usable_bytes(self, params: CostParams = DEFAULT_PARAMS) -> float:
        return self.memory_bytes * params.gpu_memory_utilization - params.activation_reserve_gib * GIB


@dataclass(frozen=True, slots=True)
class LinkPerf:
    bandwidth: float  # bytes/s per direction
    latency_s: float
    kind: str = ""

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> LinkPerf:
        return cls(
            float(attrs["bandwidth_gbps"]) * 1e9,
            float(attrs.get("latency_us", 0.0)) * 1e-6,
            str(attrs.get("link", "")),
        )


LOCAL = LinkPerf(math.inf, 0.0, "SELF")


def best_link(graph: nx.Graph, a: str, b: str) -> LinkPerf:
    """Bandwidth and latency of the best path between two GPUs.

    The topology graph has an edge between every GPU pair, and the direct edge is the path
    NCCL uses; when an edge is missing the widest path (max bottleneck bandwidth, latencies
    summed along it) stands in.
    """
    if a == b:
        return LOCAL
    if graph.has_edge(a, b):
        return LinkPerf.from_attrs(graph.edges[a, b])
    import networkx as nx

    # Widest path: maximum spanning tree contains a max-bottleneck path between any two nodes.
    tree = nx.maximum_spanning_tree(graph, weight="bandwidth_gbps")
    try:
        path = nx.shortest_path(tree, a, b)
    except nx.NetworkXNoPath:
        from llmplan.errors import LlmplanError

        raise LlmplanError(
            f"no path between {a} and {b} in the topology; check the topology source"
        ) from None
    edges = [graph.edges[u, v] for u, v in zip(path, path[1:], strict=False)]
    return LinkPerf(
        min(float(e["bandwidth_gbps"]) for e in edges) * 1e9,
        sum(float(e.get("latency_us", 0.0)) for e in edges) * 1e-6,
        "PATH",
    )


def transfer_coefficients(link: LinkPerf, params: CostParams = DEFAULT_PARAMS) -> tuple[float, float]:
    """``(c0, c1)``: a stage hand-off of ``S`` bytes costs ``c0 + c1 * S`` (NCCL send/recv)."""
    if link.bandwidth == math.inf:
        return 0.0, 0.0
    if params.cost_model == "ops":
        from llmplan.opcost.collectives import send_recv_coefficients

        return send_recv_coefficients(link)
    return link.latency_s, 1.0 / (link.bandwidth * params.link_eff)


def transfer_time(nbytes: float, link: LinkPerf, params: CostParams = DEFAULT_PARAMS) -> float:
    if link.bandwidth == math.inf or nbytes <= 0:
        return 0.0
    c0, c1 = transfer_coefficients(link, params)
    return c0 + c1 * nbytes


def allreduce_coefficients(
    tp: int, link: LinkPerf, params: CostParams = DEFAULT_PARAMS
) -> tuple[float, float]:
    """``(c0, c1)``: an all-reduce of ``S`` bytes over ``tp`` GPUs costs ``c0 + c1 * S``.

    With ``cost_model="ops"`` (default) this is :func:`llmplan.opcost.collectives.allreduce_coefficients`
    (NCCL fitted on measured A100 timings); ``"roofline"`` keeps the bare ring formula.
    """
    if tp <= 1 or link.bandwidth == math.inf:
        return 0.0, 0.0
    if params.cost_model == "ops":
        from llmplan.opcost.collectives import allreduce_coefficients as nccl

        return nccl(tp, link)
    return 2 * (tp - 1) * link.latency_s, 2 * (tp - 1) / tp / (link.bandwidth * params.link_eff)


def allreduce_time(nbytes: float, tp: int, link: LinkPerf, params: CostParams = DEFAULT_PARAMS) -> float:
    """All-reduce of ``nbytes`` per GPU over a TP group of ``tp`` GPUs whose slowest link is ``link``."""
    if tp <= 1 or nbytes <= 0:
        return 0.0
    c0, c1 = allreduce_coefficients(tp, link, params)
    return c0 + c1 * nbytes


def alltoall_coefficients(n: int, link: LinkPerf, params: CostParams = DEFAULT_PARAMS) -> tuple[float, float]:
    """``(c0, c1)``: an all-to-all over ``n`` GPUs where each holds ``S`` bytes for the whole group
    costs ``c0 + c1 * S`` (``(n-1)/n * S`` cross each GPU's link, ``n - 1`` pairwise steps).

    ``cost_model="ops"``: :func:`llmplan.opcost.collectives.alltoall_coefficients`; ``"roofline"``:
    ``(n-1) * latency`` and ``(n-1)/n / (bandwidth * link_eff)``."""
    if n <= 1 or link.bandwidth == math.inf:
        return 0.0, 0.0
    if params.cost_model == "ops":
        from llmplan.opcost.collectives import alltoall_coefficients as nccl

        return nccl(n, link)
    return (n - 1) * link.latency_s, (n - 1) / n / (link.bandwidth * params.link_eff)


def ep_dispatch_bytes(spec: ModelSpec, tokens: float, n: int) -> float:
    """Bytes each GPU of an EP group of ``n`` hands to the all-to-all for one dispatch (or combine)
    of a step of ``tokens`` tokens: its ``1/n`` share of the tokens (the group holds every token
    after the attention all-reduce; each is dispatched once, by one rank), each token's hidden
    state once per routed expert (top-k). The ``(n-1)/n`` that leaves the GPU is in
    :func:`alltoall_coefficients`."""
    return tokens / n * spec.hidden_size * spec.dtype_bytes * spec.num_experts_per_tok


def tp_comm_time(
    spec: ModelSpec,
    tokens: float,
    tp: int,
    link: LinkPerf,
    params: CostParams = DEFAULT_PARAMS,
    ep: bool = False,
) -> float:
    """Communication of one decoder layer (mean over layer kinds) on a TP group of ``tp`` GPUs whose
    slowest link is ``link``, for ``tokens`` tokens.

    TP: two all-reduces of the activations (after attention and after the MLP/MoE). With expert
    parallelism (``ep``, EP = ``tp``) an MoE layer keeps the attention all-reduce and replaces the
    MoE output's all-reduce by a dispatch and a combine all-to-all of
    :func:`ep_dispatch_bytes`; dense layers (DeepSeek's first k) keep both all-reduces.
    """
    if tp <= 1 or tokens <= 0:
        return 0.0
    ar = allreduce_time(activation_bytes(spec, tokens), tp, link, params)
    if not (ep and spec.is_moe):
        return 2 * ar
    c0, c1 = alltoall_coefficients(tp, link, params)
    a2a = c0 + c1 * ep_dispatch_bytes(spec, tokens, tp)
    share = spec.moe_layers / spec.num_hidden_layers
    return 2 * ar + share * (2 * a2a - ar)


def ep_replicated_params(spec: ModelSpec, ep: bool) -> float:
    """Matmul parameters per layer (mean over layer kinds) every GPU of an EP group holds whole: the
    shared experts (routed experts are split whole across the group, attention by TP)."""
    if not (ep and spec.is_moe):
        return 0.0
    return spec.moe_layers / spec.num_hidden_layers * spec.shared_expert_params


def layer_weight_bytes_per_gpu(spec: ModelSpec, tp: int, ep: bool = False, moe: bool | None = None) -> float:
    """One layer's weights on each GPU of a TP group: everything / ``tp``, except that under EP the
    shared experts sit whole on every GPU. ``moe`` picks the kind (None: the largest kind)."""
    kind_moe = spec.moe_layers > 0 if moe is None else moe
    if not kind_moe:
        return spec.dense_layer_weight_bytes / tp
    shared = spec.shared_expert_params * spec.weight_param_bytes if (ep and spec.is_moe) else 0.0
    return (spec.moe_layer_weight_bytes - shared) / tp + shared


def range_weight_bytes_per_gpu(spec: ModelSpec, start: int, end: int, tp: int, ep: bool = False) -> float:
    """Layers ``[start, end)`` on each GPU of a TP group, exactly per layer kind (dense layers first)."""
    dense = max(0, min(end, spec.dense_layers) - start)
    return dense * layer_weight_bytes_per_gpu(spec, tp, ep, False) + (
        end - start - dense
    ) * layer_weight_bytes_per_gpu(spec, tp, ep, spec.moe_layers > 0)


def _kv_split(spec: ModelSpec, tp: int) -> int:
    """How many ways TP divides the KV cache (KV heads are replicated beyond their count; MLA's
    latent is one head, replicated on every rank)."""
    return max(1, min(tp, spec.kv_split_heads))


def layer_time(
    spec: ModelSpec,
    gpu: GpuPerf,
    tokens: float,
    attn_pairs: float,
    kv_read_tokens: float,
    tp: int = 1,
    params: CostParams = DEFAULT_PARAMS,
    ep: bool = False,
) -> float:
    """One decoder layer (no TP communication): the per-operator model (``cost_model="ops"``, dense
    16-bit layers), else the roofline of compute and memory traffic.

    Roofline: weight matmuls run at the weight precision's peak (:meth:`GpuPerf.matmul_flops`), attention
    at BF16; an MoE layer reads the experts its tokens touch (:func:`layer_weight_read_bytes`). Under
    expert parallelism (``ep``) the routed experts split across the group as TP would split them
    (uniform routing), and the shared experts run whole on every GPU (:func:`ep_replicated_params`).
    """
    if params.cost_model == "ops":
        from llmplan.opcost.stage import layer_time_ops, supports

        if supports(spec):
            return layer_time_ops(spec, gpu, tokens, attn_pairs, kv_read_tokens, tp, ep)
    rep = ep_replicated_params(spec, ep) if tp > 1 else 0.0
    compute = (
        2.0 * (spec.layer_linear_params - rep) * tokens / gpu.matmul_flops(spec)
        + spec.attn_flops_per_pair * attn_pairs / gpu.flops
    ) / tp + 2.0 * rep * tokens / gpu.matmul_flops(spec)
    rep_bytes = rep * spec.weight_param_bytes
    nbytes = (
        (layer_weight_read_bytes(spec, tokens) - rep_bytes) / tp
        + rep_bytes
        + spec.kv_bytes_per_token_layer * (kv_read_tokens + tokens) / _kv_split(spec, tp)
        + 4 * spec.hidden_size * spec.dtype_bytes * tokens
    )
    return (
        max(compute / params.compute_eff, nbytes / (gpu.mem_bw * params.memory_eff)) + params.layer_overhead_s
    )


def layer_weight_read_bytes(spec: ModelSpec, tokens: float) -> float:
    """Weight bytes one layer reads in an iteration of ``tokens`` tokens (MoE term).

    Dense: all of it. MoE: everything but the routed experts, plus the expected number of distinct
    experts ``tokens`` tokens touch with top-k of E (:meth:`ModelSpec.moe_expert_read_bytes`), for the
    MoE layers' share of the layers (mean over layers, as the other per-layer terms).
    """
    if not spec.is_moe:
        return spec.layer_weight_bytes
    moe = spec.moe_layers / spec.num_hidden_layers
    routed = spec.num_experts * spec.expert_params * spec.weight_param_bytes
    base = moe * (spec.moe_layer_weight_bytes - routed) + (1 - moe) * spec.dense_layer_weight_bytes
    return base + moe * spec.moe_expert_read_bytes(tokens)


def prefill_layer_time(
    spec: ModelSpec,
    gpu: GpuPerf,
    prompt_tokens: int,
    batch: int = 1,
    tp: int = 1,
    params: CostParams = DEFAULT_PARAMS,
    ep: bool = False,
) -> float:
    """One layer prefilling ``batch`` prompts of ``prompt_tokens`` tokens each."""
    tokens = batch * prompt_tokens
    pairs = batch * prompt_tokens * (prompt_tokens + 1) / 2
    return layer_time(spec, gpu, tokens, pairs, 0.0, tp, params, ep)


def decode_layer_time(
    spec: ModelSpec,
    gpu: GpuPerf,
    batch: int,
    context: float,
    tp: int = 1,
    params: CostParams = DEFAULT_PARAMS,
    ep: bool = False,
) -> float:
    """One layer producing one token for each of ``batch`` sequences with mean ``context`` KV tokens."""
    return layer_time(spec, gpu, batch, batch * context, batch * context, tp, params, ep)


def head_time(
    spec: ModelSpec, gpu: GpuPerf, logits_tokens: float, tp: int = 1, params: CostParams = DEFAULT_PARAMS
) -> float:
    """Final norm + LM head for ``logits_tokens`` positions (one per sequence)."""
    if logits_tokens <= 0:
        return 0.0
    if params.cost_model == "ops":
        from llmplan.opcost.stage import head_time_ops, supports

        if supports(spec):
            return head_time_ops(spec, gpu, logits_tokens, tp)
    flops = spec.head_flops_per_token * logits_tokens / tp
    nbytes = spec.vocab_size * spec.hidden_size * spec.dtype_bytes / tp
    return max(flops / (gpu.flops * params.compute_eff), nbytes / (gpu.mem_bw * params.memory_eff))


def activation_bytes(spec: ModelSpec, tokens: float) -> float:
    return tokens * spec.hidden_size * spec.dtype_bytes


@dataclass(frozen=True, slots=True)
class StageSpec:
    """Layers ``[start, end)`` on a tensor-parallel group (one GPU when ``len(gpus) == 1``)."""

    gpus: tuple[GpuPerf, ...]
    start: int
    end: int
    first: bool
    last: bool
    tp_link: LinkPerf = LOCAL  # slowest link inside the TP group
    ep: bool = False  # MoE experts held whole across the group (EP = tp), see tp_comm_time

    @property
    def layers(self) -> int:
        return self.end - self.start

    @property
    def tp(self) -> int:
        return len(self.gpus)

    @property
    def gpu(self) -> GpuPerf:
        """The slowest GPU of the group paces it."""
        return min(self.gpus, key=lambda g: (g.flops, g.mem_bw))

    def weight_bytes_per_gpu(self, spec: ModelSpec) -> float:
        w = 0.0
        if self.first:
            w += spec.embed_weight_bytes
        if self.last:
            w += spec.head_weight_bytes
        ep = self.ep and self.tp > 1
        return w / self.tp + range_weight_bytes_per_gpu(spec, self.start, self.end, self.tp, ep)

    def kv_bytes_per_token_per_gpu(self, spec: ModelSpec, seq_tokens: float | None = None) -> float:
        """KV bytes per token on each GPU of the stage. With ``seq_tokens`` (the length sequences
        are sized for) sliding-window layers hold at most their window
        (:meth:`ModelSpec.range_kv_bytes_per_seq`, as the planner's reserve); without, every layer
        counts every token (conservative)."""
        if seq_tokens is None or seq_tokens <= 0:
            return self.layers * spec.kv_bytes_per_token_layer / _kv_split(spec, self.tp)
        per_seq = spec.range_kv_bytes_per_seq(self.start, self.end, seq_tokens)
        return per_seq / seq_tokens / _kv_split(spec, self.tp)


@dataclass(slots=True)
class InstanceCost:
    """One serving instance (PP stages, each a TP group): implements :class:`IterationCost`."""

    spec: ModelSpec
    stages: Sequence[StageSpec]
    links: Sequence[LinkPerf] = ()  # links[k] joins stages k and k+1
    params: CostParams = DEFAULT_PARAMS
    # Length (prompt + output) the KV pool is sized for: sliding-window layers then hold at most
    # their window per sequence, as in the planner's reserve; None counts every layer in full.
    seq_tokens: int | None = None
    _coef: tuple = field(init=False, repr=False)
    _ops: tuple = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if len(self.links) != max(0, len(self.stages) - 1):
            raise ValueError("links must join consecutive stages (len(stages) - 1 entries)")
        s, p = self.spec, self.params
        per_stage = []
        # Communication is affine in the token count: c0 + c1 * tokens (TP all-reduces, PP sends).
        c0 = c1 = 0.0
        for st in self.stages:
            g, t, n = st.gpu, st.tp, st.layers
            ep = st.ep and t > 1 and s.is_moe
            inv_c = 1.0 / (g.flops * p.compute_eff)
            inv_mm = 1.0 / (g.matmul_flops(s) * p.compute_eff)
            inv_m = 1.0 / (g.mem_bw * p.memory_eff)
            kvs = _kv_split(s, t)
            # Per layer: compute = ct*T + cp*P ; memory = m0 + mk*(KVread + T) + ma*T (+ experts read)
            rep = ep_replicated_params(s, ep)  # shared experts whole on every GPU under EP
            ct = 2.0 * ((s.layer_linear_params - rep) / t + rep) * inv_mm
            cp = s.attn_flops_per_pair / t * inv_c
            rep_b = rep * s.weight_param_bytes
            m0 = ((layer_weight_read_bytes(s, 0) - rep_b) / t + rep_b) * inv_m
            mk = s.kv_bytes_per_token_layer / kvs * inv_m
            ma = 4 * s.hidden_size * s.dtype_bytes * inv_m
            head_c = (s.head_flops_per_token / t * inv_c) if st.last else 0.0
            head_m = (s.vocab_size * s.hidden_size * s.dtype_bytes / t * inv_m) if st.last else 0.0
            me = inv_m / t if s.is_moe else 0.0  # times moe-share * expected touched-expert bytes
            per_stage.append((n, ct, cp, m0, mk, ma, n * p.layer_overhead_s, head_c, head_m, me))
            if t > 1:  # two all-reduces of the activations per layer (EP: see tp_comm_time)
                a0, a1 = allreduce_coefficients(t, st.tp_link, p)
                c0 += 2 * n * a0
                c1 += 2 * n * a1 * activation_bytes(s, 1.0)
                if ep:
                    share = s.moe_layers / s.num_hidden_layers
                    e0, e1 = alltoall_coefficients(t, st.tp_link, p)
                    c0 += n * share * (2 * e0 - a0)
                    c1 += n * share * (2 * e1 * ep_dispatch_bytes(s, 1.0, t) - a1 * activation_bytes(s, 1.0))
        for lk in self.links:
            t0, t1 = transfer_coefficients(lk, p)
            c0 += t0
            c1 += t1 * activation_bytes(s, 1.0)
        self._coef = (tuple(per_stage), c0 + p.iteration_overhead_s, c1)
        if p.cost_model == "ops":
            from llmplan.opcost.stage import StageOps, supports

            if supports(s):
                self._ops = tuple(
                    StageOps(s, st.gpu, st.tp, st.layers, st.first, st.last, st.ep and st.tp > 1)
                    for st in self.stages
                )

    # ---- IterationCost --------------------------------------------------------------------
    def iteration_time(self, shape: BatchShape) -> float:
        tokens = shape.prefill_tokens + shape.decode_seqs
        if tokens <= 0:
            return 0.0
        pairs = shape.prefill_attn + shape.decode_ctx
        kv_rw = shape.decode_ctx + tokens
        logits = shape.decode_seqs + (1 if shape.prefill_tokens > 0 else 0)
        stages, c0, c1 = self._coef
        total = c0 + c1 * tokens
        if self._ops:  # operator model: one term per operator, attention, head (llmplan.opcost)
            pt, pa, ds, dc = shape.prefill_tokens, shape.prefill_attn, shape.decode_seqs, shape.decode_ctx
            for so in self._ops:
                total += so.nonattn(tokens) + so.attention(pt, pa, ds, dc) + so.head(logits)
            return total
        s = self.spec
        experts = s.moe_layers / s.num_hidden_layers * s.moe_expert_read_bytes(tokens) if s.is_moe else 0.0
        for n, ct, cp, m0, mk, ma, ovh, hc, hm, me in stages:
            comp = ct * tokens + cp * pairs
            mem = m0 + mk * kv_rw + ma * tokens + me * experts
            total += n * (comp if comp > mem else mem) + ovh
            if hc:
                hcomp = hc * logits
                total += hcomp if hcomp > hm else hm
        return total

    # ---- conveniences ---------------------------------------------------------------------
    def prefill_time(self, prompt_tokens: int, batch: int = 1) -> float:
        return self.iteration_time(
            BatchShape(
                prefill_tokens=prompt_tokens * batch,
                prefill_attn=batch * prompt_tokens * (prompt_tokens + 1) / 2,
            )
        )

    def decode_time(self, batch: int, context: float) -> float:
        return self.iteration_time(BatchShape(decode_seqs=batch, decode_ctx=int(batch * context)))

    def kv_capacity_tokens(self) -> int:
        """Tokens of KV the instance can hold: the tightest stage's free memory / its per-token KV
        (sliding-window layers capped at ``seq_tokens``-long sequences when that is set)."""
        cap = math.inf
        for st in self.stages:
            free = min(g.usable_bytes(self.params) for g in st.gpus) - st.weight_bytes_per_gpu(self.spec)
            per_tok = st.kv_bytes_per_token_per_gpu(self.spec, self.seq_tokens)
            if per_tok > 0:
                cap = min(cap, max(0.0, free) / per_tok)
        return 0 if cap == math.inf else int(cap)

    def kv_capacity_blocks(self, block_size: int = 16) -> int:
        return self.kv_capacity_tokens() // block_size

    @property
    def num_gpus(self) -> int:
        return sum(st.tp for st in self.stages)

    # ---- constructors ---------------------------------------------------------------------
    @classmethod
    def single(
        cls,
        spec: ModelSpec,
        gpu_attrs: Mapping[str, Any] | GpuPerf,
        tp: int = 1,
        pp: int = 1,
        link: LinkPerf | Mapping[str, Any] | None = None,
        params: CostParams = DEFAULT_PARAMS,
        ep: bool = False,
    ) -> InstanceCost:
        """``tp * pp`` identical GPUs, layers split as evenly as possible over ``pp`` stages
        (``ep``: MoE experts held whole across each TP group)."""
        gpu = gpu_attrs if isinstance(gpu_attrs, GpuPerf) else GpuPerf.from_attrs(gpu_attrs)
        lk = (
            link
            if isinstance(link, LinkPerf)
            else (LinkPerf.from_attrs(link) if link else LinkPerf(300e9, 3e-6, "NV"))
        )
        n = spec.num_hidden_layers
        if not 1 <= pp <= n:
            raise ValueError(f"pp must be in [1, {n}]")
        bounds = [round(k * n / pp) for k in range(pp + 1)]
        stages = [
            StageSpec(
                (gpu,) * tp,
                bounds[k],
                bounds[k + 1],
                k == 0,
                k == pp - 1,
                lk if tp > 1 else LOCAL,
                ep and tp > 1,
            )
            for k in range(pp)
        ]
        return cls(spec, stages, [lk] * (pp - 1), params)

    @classmethod
    def from_plan(
        cls, plan: Plan, graph: nx.Graph, params: CostParams | None = None, instance: int = 0
    ) -> InstanceCost:
        """The instance of a saved plan (``instance`` picks one of a P:D plan's instances)."""
        from llmplan.models.spec import ModelSpec

        spec = ModelSpec.from_dict(plan.model_spec)
        stages_plan = plan.instance_stages(instance)
        ep = bool((plan.metrics or {}).get("expert_parallel"))
        stages, links = [], []
        for k, sp in enumerate(stages_plan):
            gpus = tuple(GpuPerf.from_attrs(graph.nodes[g]) for g in sp.gpus)
            tpl = LOCAL
            for a in sp.gpus:
                for b in sp.gpus:
                    if a < b:
                        lk = best_link(graph, a, b)
                        if lk.bandwidth < tpl.bandwidth:
                            tpl = lk
            stages.append(
                StageSpec(
                    gpus,
                    sp.layer_start,
                    sp.layer_end,
                    k == 0,
                    k == len(stages_plan) - 1,
                    tpl,
                    ep and len(gpus) > 1,
                )
            )
            if k:
                links.append(best_link(graph, stages_plan[k - 1].gpus[0], sp.gpus[0]))
        wl = plan.workload
        seq = wl.kv_tokens // wl.max_batch if wl is not None and wl.max_batch > 0 else None
        return cls(spec, stages, links, params or plan_cost_params(plan), seq_tokens=seq)
