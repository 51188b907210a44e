"""Attention-level KV migration: split one layer's attention across workers and merge exactly.

BanaServe offloads part of a hot layer's attention to a colder worker. Two cuts keep the
result exact:

* **by KV heads** -- each worker owns a disjoint set of KV heads *with the query heads of
  their GQA groups*; heads are independent, so the outputs simply concatenate along the
  head axis;
* **by KV blocks along the sequence** -- each worker owns a range of key positions and
  returns its partial output ``o_w = softmax(s_w) v_w`` together with the log-sum-exp of
  its scores ``l_w = log sum_j exp(s_wj)``. With ``l = logsumexp_w(l_w)`` the exact output is
  ``o = sum_w exp(l_w - l) * o_w`` (the thesis's merge, also FlashAttention's/FlashDecoding's
  rescaling). A worker whose keys are all masked for a query returns ``l_w = -inf`` and
  weighs zero.

Tensor layout (batched, padded, ragged): ``q [B, Tq, Hq, D]``, ``k, v [B, Tk, Hkv, D]``,
``q_lens [B]`` and ``kv_lens [B]``. Query ``i`` of sequence ``b`` sits at absolute position
``kv_lens[b] - q_lens[b] + i`` (its own KV is already appended), so prefill (``q_len ==
kv_len``), chunked prefill and decode (``q_len == 1``) are the same call. Padding query rows
come back as zeros. Everything here is pure torch and device-agnostic; the workers can be
threads, processes or GPUs -- only the tensors in and the ``(out, lse)`` pairs out cross.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmplan.errors import LlmplanError


@dataclass(frozen=True, slots=True)
class HeadShard:
    """One worker's share of a layer under the head split."""

    kv_heads: tuple[int, ...]
    q_heads: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BlockShard:
    """One worker's key range ``[start, end)`` (absolute token positions) under the block split."""

    start: int
    end: int


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int]:
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise LlmplanError("attention expects q [B,Tq,Hq,D] and k,v [B,Tk,Hkv,D]; reshape the inputs")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise LlmplanError(
            f"attention shape mismatch q={tuple(q.shape)} k={tuple(k.shape)} v={tuple(v.shape)}"
        )
    hq, hkv = q.shape[2], k.shape[2]
    if hq % hkv:
        raise LlmplanError(f"{hq} query heads are not a multiple of {hkv} KV heads; fix the model config")
    return hq, hkv


def _lens(x: torch.Tensor | Sequence[int] | None, default: int, batch: int, device) -> torch.Tensor:
    if x is None:
        return torch.full((batch,), default, dtype=torch.long, device=device)
    return torch.as_tensor(x, dtype=torch.long, device=device)


def attention_with_lse(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_lens: torch.Tensor | Sequence[int] | None = None,
    kv_lens: torch.Tensor | Sequence[int] | None = None,
    *,
    causal: bool = True,
    scale: float | None = None,
    key_offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the given keys; returns ``(out [B,Tq,Hq,D], lse [B,Tq,Hq])``.

    ``k``/``v`` may be a slice of the full key sequence starting at absolute position
    ``key_offset``; ``kv_lens`` is always each sequence's *full* KV length (it fixes the query
    positions and which slice keys exist). Rows with no visible key get ``out = 0`` and
    ``lse = -inf``.
    """
    hq, hkv = _check_shapes(q, k, v)
    b, tq, _, d = q.shape
    tk = k.shape[1]
    dev = q.device
    total = _lens(kv_lens, key_offset + tk, b, dev)
    ql = _lens(q_lens, tq, b, dev)
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    group = hq // hkv

    # [B, Hq, Tq, Tk] scores in fp32 at least: exactness of the merge depends on it.
    acc = torch.promote_types(q.dtype, torch.float32)
    qh = q.to(acc).transpose(1, 2)
    kh = k.to(acc).transpose(1, 2).repeat_interleave(group, dim=1)
    vh = v.to(acc).transpose(1, 2).repeat_interleave(group, dim=1)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale

    key_pos = key_offset + torch.arange(tk, device=dev)  # [Tk]
    q_idx = torch.arange(tq, device=dev)
    q_pos = (total - ql)[:, None] + q_idx[None, :]  # [B, Tq]
    mask = key_pos[None, None, :] < total[:, None, None]  # [B, 1, Tk]
    if causal:
        mask = mask & (key_pos[None, None, :] <= q_pos[:, :, None])  # [B, Tq, Tk]
    mask = mask & (q_idx[None, :, None] < ql[:, None, None])  # padding query rows see nothing
    mask = mask[:, None, :, :]  # broadcast over heads
    scores = scores.masked_fill(~mask, float("-inf"))

    lse = torch.logsumexp(scores, dim=-1)  # [B, Hq, Tq]; -inf where nothing is visible
    safe_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    probs = torch.exp(scores - safe_lse[..., None])  # exp(-inf) = 0 for masked keys
    out = torch.matmul(probs, vh)  # [B, Hq, Tq, D]
    return out.transpose(1, 2).to(q.dtype), lse.transpose(1, 2)


def attention(q, k, v, q_lens=None, kv_lens=None, *, causal: bool = True, scale: float | None = None):
    """Single-worker reference attention (output only)."""
    return attention_with_lse(q, k, v, q_lens, kv_lens, causal=causal, scale=scale)[0]


# ----------------------------------------------------------------------------- head split


def plan_head_split(num_q_heads: int, num_kv_heads: int, weights: Sequence[float]) -> list[HeadShard]:
    """Give each worker a contiguous run of KV heads in proportion to ``weights``.

    A KV head never splits from its query group (GQA), so the unit of work is one KV head;
    a worker with weight 0 gets nothing. Rounding uses the largest-remainder method so the
    shares sum exactly to ``num_kv_heads``.
    """
    if num_q_heads % num_kv_heads:
        raise LlmplanError(f"{num_q_heads} query heads are not a multiple of {num_kv_heads} KV heads")
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise LlmplanError(f"head-split weights must be non-negative and not all zero, got {list(weights)}")
    total = float(sum(weights))
    exact = [w / total * num_kv_heads for w in weights]
    counts = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(weights)), key=lambda i: exact[i] - counts[i], reverse=True)[
        : num_kv_heads - sum(counts)
    ]:
        counts[i] += 1
    group = num_q_heads // num_kv_heads
    shards, start = [], 0
    for c in counts:
        kv = tuple(range(start, start + c))
        qh = tuple(h for g in kv for h in range(g * group, (g + 1) * group))
        shards.append(HeadShard(kv_heads=kv, q_heads=qh))
        start += c
    return shards


def head_shard_attention(q, k, v, shard: HeadShard, q_lens=None, kv_lens=None, *, causal=True, scale=None):
    """What one worker computes: attention of its query heads over its KV heads only."""
    if not shard.kv_heads:
        return q.new_zeros((q.shape[0], q.shape[1], 0, q.shape[3]))
    qi = torch.tensor(shard.q_heads, device=q.device)
    ki = torch.tensor(shard.kv_heads, device=k.device)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return attention(q.index_select(2, qi), k.index_select(2, ki), v.index_select(2, ki),
                     q_lens, kv_lens, causal=causal, scale=scale)


def merge_head_shards(parts: Sequence[torch.Tensor], shards: Sequence[HeadShard]) -> torch.Tensor:
    """Concatenate per-worker outputs back into the model's head order."""
    order = [h for s in shards for h in s.q_heads]
    out = torch.cat(list(parts), dim=2)
    if order != sorted(order):
        inv = torch.empty(len(order), dtype=torch.long, device=out.device)
        inv[torch.tensor(order, device=out.device)] = torch.arange(len(order), device=out.device)
        out = out.index_select(2, inv)
    return out


def head_split_attention(q, k, v, weights, q_lens=None, kv_lens=None, *, causal=True, scale=None):
    """Head split end to end (all workers run here); equals :func:`attention`."""
    shards = plan_head_split(q.shape[2], k.shape[2], weights)
    parts = [head_shard_attention(q, k, v, s, q_lens, kv_lens, causal=causal, scale=scale) for s in shards]
    return merge_head_shards(parts, shards)


# ---------------------------------------------------------------------------- block split


def plan_block_split(kv_len: int, block_size: int, weights: Sequence[float]) -> list[BlockShard]:
    """Cut ``[0, kv_len)`` at KV-block boundaries into contiguous ranges sized by ``weights``."""
    if block_size <= 0:
        raise LlmplanError(f"block_size must be positive, got {block_size}")
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise LlmplanError(f"block-split weights must be non-negative and not all zero, got {list(weights)}")
    nblocks = -(-kv_len // block_size)
    total = float(sum(weights))
    cuts, acc = [0], 0.0
    for w in weights[:-1]:
        acc += w / total
        cuts.append(min(nblocks, max(cuts[-1], round(acc * nblocks))))
    cuts.append(nblocks)
    return [
        BlockShard(min(kv_len, a * block_size), min(kv_len, b * block_size))
        for a, b in zip(cuts, cuts[1:], strict=False)
    ]


def block_shard_attention(q, k, v, shard: BlockShard, q_lens=None, kv_lens=None, *, causal=True, scale=None):
    """What one worker computes: partial attention over keys ``[start, end)`` and its LSE.

    In a real deployment the worker holds only ``k[:, start:end]``; the slice here stands for
    the KV blocks that were migrated to it.
    """
    b, _, hq, d = q.shape
    total = _lens(kv_lens, k.shape[1], b, q.device)
    if shard.end <= shard.start:
        return q.new_zeros(q.shape), q.new_full((b, q.shape[1], hq), float("-inf"), dtype=torch.float32)
    return attention_with_lse(
        q, k[:, shard.start:shard.end], v[:, shard.start:shard.end], q_lens, total,
        causal=causal, scale=scale, key_offset=shard.start,
    )


def merge_lse(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact merge of partial attentions: ``o = sum_w exp(l_w - l) o_w`` with ``l = logsumexp_w l_w``."""
    if not parts:
        raise LlmplanError("merge_lse needs at least one partial result")
    outs = torch.stack([o.to(torch.float32) for o, _ in parts])  # [W, B, Tq, H, D]
    lses = torch.stack([lse.to(torch.float32) for _, lse in parts])  # [W, B, Tq, H]
    lse = torch.logsumexp(lses, dim=0)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    w = torch.exp(lses - safe[None])  # 0 for workers that saw nothing
    out = (w[..., None] * outs).sum(dim=0)
    return out.to(parts[0][0].dtype), lse


def block_split_attention(q, k, v, weights, block_size: int, q_lens=None, kv_lens=None, *, causal=True,
                          scale=None):
    """Block split end to end (all workers run here); equals :func:`attention`."""
    shards = plan_block_split(k.shape[1], block_size, weights)
    parts = [block_shard_attention(q, k, v, s, q_lens, kv_lens, causal=causal, scale=scale) for s in shards]
    return merge_lse(parts)[0]
