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
import torch.nn.functional as F
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
    # Heads mode only: a RemoteHeadsClient that computes the last shard's heads on another
    # process holding their KV (llmplan.migrate.remote_attention); None = all shards here.
    remote: object | None = None


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE in the rotate-half form the engine uses, on ``[T, heads, head_dim]`` (own copy: the
    engine's helper is private and its signature is not a contract)."""
    half = x.shape[-1] // 2
    rot = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos.unsqueeze(1) + rot * sin.unsqueeze(1)


class OffloadedLayer(nn.Module):
    """Decoder layer ``inner`` with its attention computed by shards per :class:`OffloadPlan`."""

    def __init__(self, inner: nn.Module, plan: OffloadPlan) -> None:
        super().__init__()
        if plan.mode not in ("heads", "blocks"):
            raise LlmplanError(f"attention offload mode must be 'heads' or 'blocks', not {plan.mode!r}")
        if plan.remote is not None and plan.mode != "heads":
            raise LlmplanError("a remote attention worker is supported for the head split only")
        self.inner = inner
        self.plan = plan
        self.index = inner.index
        self.device = inner.device
        self.shard_calls = 0

    def forward(self, x, cos, sin, meta, kv):
        from llmplan.runtime.engine.attention import write_kv

        layer, cfg = self.inner, self.inner.cfg
        h = layer.input_layernorm(x)
        t = h.shape[0]
        q, k, v = layer.qkv_proj(h).split((cfg.q_size, cfg.kv_size, cfg.kv_size), dim=-1)
        q = _rope(q.view(t, cfg.num_heads, cfg.head_dim), cos, sin)
        k = _rope(k.view(t, cfg.num_kv_heads, cfg.head_dim), cos, sin)
        v = v.reshape(t, cfg.num_kv_heads, cfg.head_dim)
        k_cache, v_cache = kv.layer(self.index)
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
        if self.plan.remote is not None:
            a = self._remote_split(q, k, v, k_cache, v_cache, meta)
        else:
            a = self._split_attention(q, k_cache, v_cache, meta)
        x = x + layer.o_proj(a.reshape(t, cfg.q_size))
        h = layer.post_attention_layernorm(x)
        gate, up = layer.gate_up_proj(h).chunk(2, dim=-1)
        return x + layer.down_proj(F.silu(gate) * up)

    def _sequences(self, meta):
        """(rows of the flattened batch, block table, KV length) per sequence in the step."""
        if meta.num_decode:
            if meta.decode_mask is not None:
                lens = meta.decode_mask.view(meta.num_decode, -1).sum(-1).tolist()
            else:
                lens = [meta.decode_len] * meta.num_decode
            for r in range(meta.num_decode):
                yield slice(r, r + 1), meta.decode_block_tables[r], int(lens[r])
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


    def _remote_split(self, q, k_new, v_new, k_cache, v_cache, meta) -> torch.Tensor:
        """Local shards here, the last shard on the remote worker (one round trip per step)."""
        cfg = self.inner.cfg
        shards = plan_head_split(cfg.num_heads, cfg.num_kv_heads, self.plan.weights)
        seqs = list(self._sequences(meta))
        remote_out = self.plan.remote.attend(q, k_new, v_new, meta.slot_mapping, seqs)
        parts = []
        for s in shards[:-1]:
            part = q.new_empty((q.shape[0], len(s.q_heads), q.shape[2]))
            for rows, table, length in seqs:
                kk = k_cache[table].flatten(0, 1)[:length].unsqueeze(0)
                vv = v_cache[table].flatten(0, 1)[:length].unsqueeze(0)
                n = rows.stop - rows.start
                part[rows] = head_shard_attention(q[rows].unsqueeze(0), kk, vv, s, [n], [length])[0]
            parts.append(part)
        parts.append(remote_out)
        self.shard_calls += len(shards)
        return merge_head_shards([p.unsqueeze(0) for p in parts], shards)[0]  # merge takes [B, T, H, D]


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
