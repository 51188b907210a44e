"""Attention-level migration inside a multi-worker instance: some KV heads of a layer on another worker.

A layer's *owner* (the worker holding it) hands the last ``n`` of its KV heads -- with their GQA
query groups, and the KV of those heads in every block in use -- to a *host* worker. From then
on, every step, the owner computes q/k/v for all heads, writes all heads' K/V into its own pool
(so it always holds a complete copy and restoring is free), sends the offloaded heads' q/k/v rows
to the host, computes its own heads' attention over its pool while the host computes the
offloaded heads' attention over the host's pool, and concatenates the two outputs. Heads are
independent, so the layer's output is the single-worker one (same kernel, a subset of heads).

The host already knows the step's attention metadata (every rank builds the same
:class:`~llmplan.runtime.engine.step_inputs.StepInputs` from the step's work), so a request is
only the rows of q/k/v, and the reply only the output rows.

Ordering (no deadlock, no tags): every rank walks the step in global layer order. A host serves
the layers it hosts for owners *before* it in the pipeline before it receives its hidden state,
and those for owners *after* it once it has passed its hidden state on (rank 0: before it
receives the sampling rows back).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from llmplan.errors import LlmplanError


@dataclass(frozen=True, slots=True)
class HeadOffload:
    """Layer ``layer`` (held by ``owner``) has its last ``kv_heads`` KV heads on ``host``."""

    layer: int
    owner: int
    host: int
    kv_heads: int  # offloaded KV heads: the contiguous tail [num_kv_heads - kv_heads, num_kv_heads)

    def local_kv(self, num_kv_heads: int) -> int:
        return num_kv_heads - self.kv_heads


def check_offload(num_kv_heads: int, kv_heads: int) -> None:
    if num_kv_heads < 2:
        raise LlmplanError(f"the model has {num_kv_heads} KV head; offloading heads needs at least 2")
    if not 1 <= kv_heads < num_kv_heads:
        raise LlmplanError(f"kv_heads must be 1..{num_kv_heads - 1} (the owner keeps at least one of its "
                           f"{num_kv_heads} KV heads), got {kv_heads}")


def request_numel(tokens: int, off: HeadOffload, cfg) -> int:
    """Elements of one attention request: q rows of the offloaded query heads, then their K and V."""
    group = cfg.num_heads // cfg.num_kv_heads
    return tokens * off.kv_heads * cfg.head_dim * (group + 2)


class OffloadedHeadsLayer(nn.Module):
    """The owner's side: decoder layer ``inner`` with its last KV heads' attention on the host."""

    def __init__(self, inner: nn.Module, off: HeadOffload, comm) -> None:
        super().__init__()
        self.inner, self.off, self.comm = inner, off, comm
        self.index = inner.index
        self.device = inner.device
        self.wait_s = 0.0  # time spent waiting for the host's reply (not this worker's compute)
        self.requests = 0

    def forward(self, x, cos, sin, meta, kv):
        from llmplan.runtime.engine.attention import paged_attention, write_kv

        layer, cfg, off = self.inner, self.inner.cfg, self.off
        q, k, v = layer.qkv(x, cos, sin)
        t = q.shape[0]
        k_cache, v_cache = kv.layer(self.index)
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)  # all heads: the owner keeps a full copy
        kl = off.local_kv(cfg.num_kv_heads)
        ql = kl * (cfg.num_heads // cfg.num_kv_heads)
        req = torch.cat([q[:, ql:].reshape(-1), k[:, kl:].reshape(-1), v[:, kl:].reshape(-1)])
        work = self.comm.isend(req, off.host)  # the host computes its heads while we compute ours
        local = paged_attention(q[:, :ql], k[:, :kl], v[:, :kl], k_cache[:, :, :kl], v_cache[:, :, :kl],
                                meta, ql, kl, cfg.head_dim, write=False)
        remote = torch.empty((t, (cfg.num_heads - ql) * cfg.head_dim), dtype=q.dtype, device=q.device)
        t0 = time.perf_counter()
        work.wait(self.comm.timeout)
        self.comm.recv(remote, off.host)
        self.wait_s += time.perf_counter() - t0
        self.requests += 1
        return layer.finish(x, torch.cat([local.reshape(t, -1), remote], dim=1))


class HostedHeads:
    """The host's side for one layer: the offloaded heads' K/V pools, answering one request a step."""

    def __init__(self, off: HeadOffload, cfg, k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
        self.off, self.cfg = off, cfg
        self.k_pool, self.v_pool = k_pool, v_pool
        self.served = 0

    def nbytes(self) -> int:
        return 2 * self.k_pool.numel() * self.k_pool.element_size()

    def serve(self, comm, tokens: int, meta) -> float:
        """Answer the owner's request of this step; returns the seconds computing (the wait for
        the request is the owner's pace, not this worker's load)."""
        from llmplan.runtime.engine.attention import paged_attention

        cfg, off = self.cfg, self.off
        nk = off.kv_heads
        nq = nk * (cfg.num_heads // cfg.num_kv_heads)
        hd = cfg.head_dim
        req = torch.empty(request_numel(tokens, off, cfg), dtype=self.k_pool.dtype, device=self.k_pool.device)
        comm.recv(req, off.owner)
        t0 = time.perf_counter()
        q, k, v = req.split((tokens * nq * hd, tokens * nk * hd, tokens * nk * hd))
        out = paged_attention(q.view(tokens, nq, hd), k.view(tokens, nk, hd), v.view(tokens, nk, hd),
                              self.k_pool, self.v_pool, meta, nq, nk, hd)
        if out.device.type == "cuda":
            torch.cuda.synchronize(out.device)
        busy = time.perf_counter() - t0
        comm.send(out.reshape(tokens, nq * hd), off.owner)
        self.served += 1
        return busy
