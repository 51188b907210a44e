"""Attention over the paged KV cache, in plain vectorised torch.

One step's tokens are flattened into a single ``[T, ...]`` batch: the decode tokens first
(one per sequence), then each prefill chunk. New K/V are scattered into their cache slots
(``slot = block_id * block_size + offset``), then

* decode: the sequences' blocks are gathered with a padded block table into
  ``[D, kv_heads, L, head_dim]`` and one masked ``scaled_dot_product_attention`` call
  serves the whole decode batch (GQA handled by ``enable_gqa``);
* prefill chunks (chunked prefill): a chunk with no cached context attends to its own fresh
  K/V with ``is_causal``; a later chunk gathers its context from the cache and uses a causal
  mask shifted by the context length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(slots=True)
class PrefillSpan:
    start: int  # offset of the chunk in the flattened token batch
    length: int  # new tokens in this chunk
    context_len: int  # tokens already cached before this chunk
    block_table: torch.Tensor  # [num_blocks_needed] long: blocks covering context + chunk


@dataclass(slots=True)
class AttnMetadata:
    slot_mapping: torch.Tensor  # [T] long
    num_decode: int
    decode_block_tables: torch.Tensor | None = None  # [D, max_blocks] long (padded with 0)
    decode_mask: torch.Tensor | None = None  # [D, 1, 1, L] bool, True = attend
    decode_len: int = 0  # L: padded key length of the decode gather
    # (row_start, row_end, length): decode rows (sorted by length, longest first) attended
    # group by group, each gathering only its own longest context; empty = one group.
    decode_groups: tuple[tuple[int, int, int], ...] = ()
    prefills: list[PrefillSpan] = field(default_factory=list)
    _per_device: dict[torch.device, AttnMetadata] = field(default_factory=dict)

    def to(self, device: torch.device) -> AttnMetadata:
        """A copy on ``device`` (cached): pipeline stages on other devices reuse it per layer."""
        if self.slot_mapping.device == device:
            return self
        hit = self._per_device.get(device)
        if hit is None:

            def mv(t: torch.Tensor | None) -> torch.Tensor | None:
                return None if t is None else t.to(device, non_blocking=True)

            hit = AttnMetadata(
                slot_mapping=mv(self.slot_mapping),  # type: ignore[arg-type]
                num_decode=self.num_decode,
                decode_block_tables=mv(self.decode_block_tables),
                decode_mask=mv(self.decode_mask),
                decode_len=self.decode_len,
                decode_groups=self.decode_groups,
                prefills=[
                    PrefillSpan(p.start, p.length, p.context_len, p.block_table.to(device))
                    for p in self.prefills
                ],
            )
            self._per_device[device] = hit
        return hit


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor
) -> None:
    """Scatter new K/V ``[T, kv_heads, head_dim]`` into the pools at ``slots``."""
    nb, bs, kvh, hd = k_cache.shape
    k_cache.view(nb * bs, kvh, hd).index_copy_(0, slots, k)
    v_cache.view(nb * bs, kvh, hd).index_copy_(0, slots, v)


def _gather(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """Blocks of ``block_table`` (``[nb]`` or ``[D, nb]``) as ``[..., kv_heads, length, head_dim]``.

    ``index_select`` on the block dimension is a plain strided copy; advanced indexing
    (``cache[table]``) goes through the generic index kernel and is ~2x slower on CPU.
    """
    g = cache.index_select(0, block_table.reshape(-1))  # [D*nb, bs, kvh, hd]
    g = g.view(*block_table.shape[:-1], -1, *cache.shape[2:])[..., :length, :, :]
    return g.transpose(-3, -2)


def _decode_attention(q, k_cache, v_cache, table, mask, length: int, gqa: bool) -> torch.Tensor:
    """One token per row of ``q`` ``[D, H, hd]`` over ``length`` cached keys -> ``[D, H, 1, hd]``."""
    kd = _gather(k_cache, table, length)  # [D, kvh, L, hd]
    vd = _gather(v_cache, table, length)
    return F.scaled_dot_product_attention(q.unsqueeze(2), kd, vd, attn_mask=mask, enable_gqa=gqa)


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttnMetadata,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    write: bool = True,
) -> torch.Tensor:
    """``q`` ``[T, H, hd]``, ``k``/``v`` ``[T, KVH, hd]`` (already rotated) -> output ``[T, H*hd]``.

    ``write=False`` reads caches the caller has written already: a head slice of a pool (a
    strided view, which the scatter cannot take) serves a layer whose other heads are offloaded.
    """
    t = q.shape[0]
    if write:
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
    gqa = num_heads != num_kv_heads
    d = meta.num_decode
    od = None
    if d:
        assert meta.decode_block_tables is not None
        groups = meta.decode_groups or ((0, d, meta.decode_len),)
        if len(groups) == 1:
            od = _decode_attention(q[:d], k_cache, v_cache, meta.decode_block_tables, meta.decode_mask,
                                   meta.decode_len, gqa)
        else:
            od = torch.empty((d, num_heads, 1, head_dim), dtype=q.dtype, device=q.device)
            bs = k_cache.shape[1]
            for r0, r1, length in groups:
                nb = -(-length // bs)
                mask = meta.decode_mask
                if mask is not None:
                    mask = mask[r0:r1, ..., :length]
                    if r1 - r0 == 1 or bool(mask[-1].all()):
                        mask = None  # rows are sorted longest first: the last one is the shortest
                od[r0:r1] = _decode_attention(q[r0:r1], k_cache, v_cache,
                                              meta.decode_block_tables[r0:r1, :nb], mask, length, gqa)
        if not meta.prefills:
            return od.view(t, num_heads * head_dim)  # pure decode step: no scatter needed
    out = torch.empty((t, num_heads, head_dim), dtype=q.dtype, device=q.device)
    if od is not None:
        out[:d] = od.squeeze(2)
    for p in meta.prefills:
        s, n = p.start, p.length
        qp = q[s : s + n].transpose(0, 1).unsqueeze(0)  # [1, H, n, hd]
        if p.context_len == 0:
            kp = k[s : s + n].transpose(0, 1).unsqueeze(0)
            vp = v[s : s + n].transpose(0, 1).unsqueeze(0)
            op = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=gqa)
        else:
            total = p.context_len + n
            kp = _gather(k_cache, p.block_table, total).unsqueeze(0)
            vp = _gather(v_cache, p.block_table, total).unsqueeze(0)
            qpos = torch.arange(p.context_len, total, device=q.device).unsqueeze(1)
            kpos = torch.arange(total, device=q.device).unsqueeze(0)
            mask = kpos <= qpos  # [n, total]
            op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=gqa)
        if len(meta.prefills) == 1 and not d:
            return op.squeeze(0).transpose(0, 1).reshape(t, num_heads * head_dim)
        out[s : s + n] = op.squeeze(0).transpose(0, 1)
    return out.view(t, num_heads * head_dim)
