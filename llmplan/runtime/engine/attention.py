"""Attention over the paged KV cache: vectorised torch, and a compiled kernel for CPU decode.

One step's tokens are flattened into a single ``[T, ...]`` batch: the decode tokens first
(one per sequence), then each prefill chunk. New K/V are scattered into their cache slots
(``slot = block_id * block_size + offset``), then

* decode: each sequence attends to its own keys, no padding to the longest context. On CPU
  with fp32 pools, the compiled kernel of :mod:`llmplan.runtime.engine.native` runs every row
  in one call; elsewhere, each row is two small matmuls over its keys, read as one slice of the
  pool when its blocks are consecutive ids (the engine's ``ContiguousBlockManager`` places them
  so) and gathered otherwise;
* prefill chunks (chunked prefill): a chunk with no cached context attends to its own fresh
  K/V with ``is_causal``; a later chunk reads its context from the cache (a slice or a gather,
  as above) and uses a causal mask shifted by the context length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from llmplan.runtime.engine import native


@dataclass(slots=True)
class PrefillSpan:
    start: int  # offset of the chunk in the flattened token batch
    length: int  # new tokens in this chunk
    context_len: int  # tokens already cached before this chunk
    block_table: torch.Tensor  # [num_blocks_needed] long: blocks covering context + chunk
    first_block: int = -1  # block_table[0] when the table is consecutive ids (a pool slice), else -1


@dataclass(slots=True)
class AttnMetadata:
    slot_mapping: torch.Tensor  # [T] long
    num_decode: int
    # Per decode row (rows 0..D-1 of the flattened batch):
    decode_block_tables: torch.Tensor | None = None  # [D, max_blocks] long (padded with 0)
    decode_lens: tuple[int, ...] = ()  # key length (context + the new token), tokens
    # first block when the row's table is consecutive ids (read as a pool slice), else -1
    decode_starts: tuple[int, ...] = ()
    prefills: list[PrefillSpan] = field(default_factory=list)
    _per_device: dict[torch.device, AttnMetadata] = field(default_factory=dict)
    _native: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    _slots: dict[int, torch.Tensor] = field(default_factory=dict)  # native_slots, per pool size

    def native_tables(self, num_blocks: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The decode rows' block tables (contiguous int64) and key lengths as tensors, for the
        compiled kernel, which reads whatever the ids point at: checked once per step that every
        id a row reads lies in ``[0, num_blocks)``, else ValueError (an engine bug)."""
        hit = self._native.get((num_blocks, block_size))
        if hit is None:
            tables = self.decode_block_tables
            assert tables is not None
            tables = tables.to(torch.int64).contiguous()
            lens = torch.tensor(self.decode_lens, dtype=torch.int64)
            nb = (lens + block_size - 1) // block_size
            used = torch.arange(tables.shape[1]).unsqueeze(0) < nb.unsqueeze(1)
            bad = (
                tables.shape[0] != len(self.decode_lens)
                or bool((lens < 1).any())
                or int(nb.max()) > tables.shape[1]
                or bool(((tables < 0) | (tables >= num_blocks))[used].any())
            )
            if bad:
                raise ValueError("decode block tables do not cover the rows' keys within the pool")
            hit = self._native[(num_blocks, block_size)] = (tables, lens)
        return hit

    def native_slots(self, num_slots: int) -> torch.Tensor:
        """``slot_mapping`` as contiguous int64 for the compiled KV write
        (:func:`native.rope_kv`), which writes wherever the slots point: checked once per step
        that each lies in ``[0, num_slots)``, else ValueError (an engine bug)."""
        hit = self._slots.get(num_slots)
        if hit is None:
            hit = self.slot_mapping.to(torch.int64).contiguous()
            if hit.numel() and (int(hit.min()) < 0 or int(hit.max()) >= num_slots):
                raise ValueError("slot mapping points outside the KV pool")
            self._slots[num_slots] = hit
        return hit

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
                decode_lens=self.decode_lens,
                decode_starts=self.decode_starts,
                prefills=[
                    PrefillSpan(p.start, p.length, p.context_len, p.block_table.to(device), p.first_block)
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


def _seq_kv(cache: torch.Tensor, first: int, table: torch.Tensor, length: int) -> torch.Tensor:
    """One sequence's first ``length`` cached keys (or values) as ``[kv_heads, length, head_dim]``:
    a view of the pool when its blocks are consecutive ids (``first`` >= 0), else gathered."""
    if first >= 0:
        nb = -(-length // cache.shape[1])
        return cache[first : first + nb].flatten(0, 1)[:length].transpose(0, 1)
    return _gather(cache, table, length)


# Decode rows of at least this many keys compute their scores two KV heads per matmul (MHA
# models on CPU only): see _decode_rows.
GROUPED_SCORES_MIN_KEYS = 96


def _paired_queries(qv: torch.Tensor, lens: tuple[int, ...]) -> tuple[torch.Tensor, ...] | None:
    """Per row, the block-diagonal queries ``[kv_heads / 2, 2, 2 * head_dim]`` of the paired
    score matmuls (row ``(j, i)`` holds head ``2j + i``'s query in half ``i``, zeros in the
    other), from ``qv`` ``[D, kv_heads, G, head_dim]``; None where no row takes that path (not
    on CPU, where alone it was measured; GQA; an odd number of KV heads; or every row shorter
    than ``GROUPED_SCORES_MIN_KEYS``)."""
    d, kvh, g, hd = qv.shape
    if qv.device.type != "cpu" or g != 1 or kvh % 2 or not lens or max(lens) < GROUPED_SCORES_MIN_KEYS:
        return None
    qb = qv.new_zeros((d, kvh // 2, 2, 2, hd))
    pairs = qv.view(d, kvh // 2, 2, hd)
    qb[:, :, 0, 0] = pairs[:, :, 0]
    qb[:, :, 1, 1] = pairs[:, :, 1]
    return qb.view(d, kvh // 2, 2, 2 * hd).unbind(0)


def _decode_rows(q, k_cache, v_cache, meta: AttnMetadata) -> torch.Tensor:
    """Decode attention over each sequence's own keys (no padding): ``[D, H, 1, hd]``.

    On CPU with fp32 contiguous pools every row goes to the compiled kernel
    (:func:`native.decode_attention`, one call for all rows; 1.1-1.6x faster than the torch path
    below on one layer, more at 2 threads: docs/serve-reference.md, "Round 5"). Otherwise, one
    row at a time, over a pool slice where its blocks are consecutive:

    Each row is two small matmuls and a softmax (scores in fp32): ``scaled_dot_product_attention``
    gives the same values but its CPU kernel tiles a single query's keys in blocks of 64 under 512
    keys, which costs it up to 1.4x here. Measured on this project's Xeon, 1 thread, 32 rows of
    12 heads x 64: 1.1 ms (16-64 keys) to 18 ms (512-800 keys) per layer, where gathering the
    rows into one padded batch first took 1.65 ms and 100 ms (300-700 keys).

    With one query head per KV head (MHA), a row's scores ``q @ K^T`` are one-row matmuls over
    256-byte keys (head_dim 64, fp32) spaced ``kv_heads * head_dim`` apart, which the CPU GEMM
    reads well below the memory bandwidth. Rows with at least ``GROUPED_SCORES_MIN_KEYS`` keys
    therefore take two KV heads per matmul: the keys of heads ``2j, 2j+1`` are one
    ``[L, 2 * head_dim]`` operand (a view), multiplied by a two-row block-diagonal query (each
    head's query in its own half, zeros in the other). Twice the multiply-adds, but the
    operand's rows are twice as long: 1.1-1.2x on the whole attention at 128-700 keys, 1 and
    2 threads, CPU (figures in docs/serve-reference.md, "Round 4"). The zero half adds exact zeros,
    so a finite row's scores are the same sums; a non-finite key would spread to its pair."""
    d = meta.num_decode
    h, hd = q.shape[1], q.shape[2]
    bs, kvh = k_cache.shape[1], k_cache.shape[2]
    out = torch.empty((d, h, 1, hd), dtype=q.dtype, device=q.device)
    if native.usable(q, k_cache, v_cache):
        tables, lens = meta.native_tables(k_cache.shape[0], bs)
        native.decode_attention(q[:d].contiguous(), k_cache, v_cache, tables, lens, out.view(d, h, hd))
        return out
    # query heads of one KV head share its keys: [kvh, G, hd] per row
    outs = out.view(d, kvh, h // kvh, hd).unbind(0)
    qv = (q[:d] * hd**-0.5).view(d, kvh, h // kvh, hd)
    qs = qv.unbind(0)
    kf, vf = k_cache.flatten(0, 1), v_cache.flatten(0, 1)  # [slots, kvh, hd] views
    upcast = q.dtype != torch.float32
    tables = meta.decode_block_tables
    assert tables is not None
    qpairs = _paired_queries(qv, meta.decode_lens)
    for r, (first, length) in enumerate(zip(meta.decode_starts, meta.decode_lens, strict=True)):
        if first >= 0:
            s0 = first * bs
            vr = vf[s0 : s0 + length].transpose(0, 1)  # [kvh, L, hd]
            if qpairs is not None and length >= GROUPED_SCORES_MIN_KEYS:
                pair_keys = kf[s0 : s0 + length].reshape(length, kvh // 2, 2 * hd)  # heads 2j, 2j+1
                kp = pair_keys.permute(1, 2, 0)  # [kvh/2, 2hd, L]
                scores = torch.bmm(qpairs[r], kp).view(kvh, 1, length)
            else:
                scores = torch.bmm(qs[r], kf[s0 : s0 + length].permute(1, 2, 0))  # [kvh, G, L]
        else:
            table = tables[r, : -(-length // bs)]
            kt = _gather(k_cache, table, length).transpose(1, 2)
            vr = _gather(v_cache, table, length)
            scores = torch.bmm(qs[r], kt)  # [kvh, G, L]
        if upcast:
            torch.bmm(torch.softmax(scores.float(), -1).to(vr.dtype), vr, out=outs[r])
        else:
            torch.bmm(torch.softmax(scores, -1), vr, out=outs[r])
    return out


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
        od = _decode_rows(q, k_cache, v_cache, meta)
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
            kp = _seq_kv(k_cache, p.first_block, p.block_table, total).unsqueeze(0)
            vp = _seq_kv(v_cache, p.first_block, p.block_table, total).unsqueeze(0)
            qpos = torch.arange(p.context_len, total, device=q.device).unsqueeze(1)
            kpos = torch.arange(total, device=q.device).unsqueeze(0)
            mask = kpos <= qpos  # [n, total]
            op = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask, enable_gqa=gqa)
        if len(meta.prefills) == 1 and not d:
            return op.squeeze(0).transpose(0, 1).reshape(t, num_heads * head_dim)
        out[s : s + n] = op.squeeze(0).transpose(0, 1)
    return out.view(t, num_heads * head_dim)
