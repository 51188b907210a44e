"""Attention-level migration inside the engine's model: a layer whose attention runs split.

:func:`offload_attention` wraps decoder layer ``i`` of the engine's :class:`LlamaModel` so its
attention is computed as shards -- by KV heads (GQA groups kept whole) or by KV blocks along
the sequence merged through their log-sum-exp -- using :mod:`llmplan.migrate.attention_split`.
Each shard is exactly what a colder worker would compute on the heads/blocks migrated to it:
it sees only its own slice of the paged KV. Projections, RoPE and the MLP stay on the layer's
worker. :func:`restore_attention` puts the plain layer back (the migration is undone).

The split changes only the order of floating-point reductions, so outputs agree with the
single-worker kernel to ~1e-6 and greedy tokens are identical (tested end to end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from llmplan.errors import LlmplanError
from llmplan.migrate.attention_split import (
    block_shard_attention,
    head_shard_attention,
    merge_head_shards,
    merge_lse,
    plan_block_split,
    plan_head_split,
)


@dataclass(frozen=True, slots=True)
class OffloadPlan:
    mode: Literal["heads", "blocks"]
    weights: tuple[float, ...]  # share of the layer's attention per worker (local worker first)
    block_size: int = 16  # granularity of the block split (the paged cache's block size)


class OffloadedLayer(nn.Module):
    """Decoder layer ``inner`` with its attention computed by shards per :class:`OffloadPlan`."""

    def __init__(self, inner: nn.Module, plan: OffloadPlan) -> None:
        super().__init__()
        if plan.mode not in ("heads", "blocks"):
            raise LlmplanError(f"attention offload mode must be 'heads' or 'blocks', not {plan.mode!r}")
        self.inner = inner
        self.plan = plan
        self.index = inner.index
        self.device = inner.device
        self.shard_calls = 0

    def forward(self, x, cos, sin, meta, kv):
        from llmplan.runtime.engine.attention import write_kv

        layer = self.inner
        q, k, v = layer.qkv(x, cos, sin)  # the layer's own projections and RoPE
        k_cache, v_cache = kv.layer(self.index)
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
        a = self._split_attention(q, k_cache, v_cache, meta)
        return layer.finish(x, a.reshape(q.shape[0], -1))

    def _sequences(self, meta):
        """(rows of the flattened batch, block table, KV length) per sequence in the step."""
        for r, length in enumerate(meta.decode_lens):
            yield slice(r, r + 1), meta.decode_block_tables[r], length
        for p in meta.prefills:
            yield slice(p.start, p.start + p.length), p.block_table, p.context_len + p.length

    def _split_attention(self, q, k_cache, v_cache, meta) -> torch.Tensor:
        cfg = self.inner.cfg
        out = torch.empty_like(q)
        for rows, table, length in self._sequences(meta):
            kk = k_cache[table].flatten(0, 1)[:length].unsqueeze(0)  # [1, L, kvh, hd]
            vv = v_cache[table].flatten(0, 1)[:length].unsqueeze(0)
            qq = q[rows].unsqueeze(0)  # [1, n, H, hd]
            n = qq.shape[1]
            if self.plan.mode == "heads":
                shards = plan_head_split(cfg.num_heads, cfg.num_kv_heads, self.plan.weights)
                parts = [head_shard_attention(qq, kk, vv, s, [n], [length]) for s in shards]
                res = merge_head_shards(parts, shards)
            else:
                shards = plan_block_split(length, self.plan.block_size, self.plan.weights)
                parts = [block_shard_attention(qq, kk, vv, s, [n], [length]) for s in shards]
                res = merge_lse(parts)[0]
            self.shard_calls += len(shards)
            out[rows] = res[0]
        return out


def offload_attention(model: nn.Module, layer: int, plan: OffloadPlan) -> OffloadedLayer:
    """Split global layer ``layer``'s attention per ``plan``; returns the wrapper."""
    k = layer - model.layer_start
    if not 0 <= k < len(model.layers):
        raise LlmplanError(
            f"layer {layer} is not on this worker (it holds {model.layer_start}..{model.layer_end - 1})"
        )
    cur = model.layers[k]
    inner = cur.inner if isinstance(cur, OffloadedLayer) else cur
    wrapped = OffloadedLayer(inner, plan)
    model.layers[k] = wrapped
    return wrapped


def restore_attention(model: nn.Module, layer: int) -> None:
    k = layer - model.layer_start
    cur = model.layers[k]
    if isinstance(cur, OffloadedLayer):
        model.layers[k] = cur.inner
