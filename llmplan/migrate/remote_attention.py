"""Attention offload to another process: a colder worker owns some KV heads of a layer.

After :meth:`RemoteHeadsClient.migrate` the helper process holds the layer's KV for the migrated
heads (their slice of every block) and the hot worker stops reading it. Each step the hot worker
sends only what the helper cannot know -- the step's query rows for the migrated query heads and
the new tokens' K/V for the migrated KV heads, with the slot mapping and each sequence's block
table -- and receives the attention output rows for those heads. The outputs concatenate with the
local heads' (:func:`llmplan.migrate.attention_split.merge_head_shards`), so the layer's result is
exact. Transport is torch.distributed point-to-point (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from llmplan.errors import LlmplanError
from llmplan.migrate.attention_split import HeadShard, attention

_STOP, _MIGRATE, _ATTEND = 0, 1, 2
_HDR = 5  # every message starts with a fixed-size header: op and up to four sizes


def _meta_tensor(seqs) -> torch.Tensor:
    flat: list[int] = [len(seqs)]
    for rows, table, length in seqs:
        t = table.tolist()
        flat += [rows.start, rows.stop, int(length), len(t), *t]
    return torch.tensor(flat, dtype=torch.long)


def _parse_meta(m: torch.Tensor):
    v = m.tolist()
    n, i, out = v[0], 1, []
    for _ in range(n):
        start, stop, length, nt = v[i:i + 4]
        out.append((slice(start, stop), torch.tensor(v[i + 4:i + 4 + nt], dtype=torch.long), length))
        i += 4 + nt
    return out


def _header(*vals: int) -> torch.Tensor:
    h = torch.zeros(_HDR, dtype=torch.long)
    h[: len(vals)] = torch.tensor(vals, dtype=torch.long)
    return h


def _recv(shape, dtype, peer: int) -> torch.Tensor:
    t = torch.empty(shape, dtype=dtype)
    dist.recv(t, peer)
    return t


class RemoteHeadsClient:
    """The hot worker's end: one layer's ``shard`` of heads lives on rank ``peer``."""

    def __init__(self, peer: int, shard: HeadShard, head_dim: int, dtype: torch.dtype) -> None:
        if not shard.kv_heads:
            raise LlmplanError("a remote head shard needs at least one KV head")
        self.peer, self.shard, self.head_dim, self.dtype = peer, shard, head_dim, dtype
        self.kv_idx = torch.tensor(shard.kv_heads, dtype=torch.long)
        self.q_idx = torch.tensor(shard.q_heads, dtype=torch.long)
        self.bytes_sent = 0
        self.migrate_s = 0.0
        self.requests = 0

    def _send(self, t: torch.Tensor) -> None:
        t = t.contiguous()
        dist.send(t, self.peer)
        self.bytes_sent += t.numel() * t.element_size()

    def migrate(self, k_pool: torch.Tensor, v_pool: torch.Tensor) -> None:
        """Hand the shard's KV (every block's slice for its heads) to the helper."""
        t0 = time.perf_counter()
        nb, bs = k_pool.shape[:2]
        self._send(_header(_MIGRATE, nb, bs, len(self.shard.kv_heads), self.head_dim))
        self._send(k_pool.index_select(2, self.kv_idx))
        self._send(v_pool.index_select(2, self.kv_idx))
        self.migrate_s = time.perf_counter() - t0

    def attend(self, q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, slots: torch.Tensor, seqs
               ) -> torch.Tensor:
        """``q [T, Hq, D]``, ``k_new``/``v_new [T, Hkv, D]`` (all heads) -> ``[T, |q_heads|, D]``."""
        meta = _meta_tensor(seqs)
        t = q.shape[0]
        nq = len(self.shard.q_heads)
        self._send(_header(_ATTEND, t, meta.numel(), nq))
        self._send(meta)
        self._send(slots.to(torch.long))
        self._send(q.index_select(1, self.q_idx))
        self._send(k_new.index_select(1, self.kv_idx))
        self._send(v_new.index_select(1, self.kv_idx))
        self.requests += 1
        return _recv((t, nq, self.head_dim), q.dtype, self.peer)

    def stop(self) -> None:
        self._send(_header(_STOP))


def serve_heads(peer: int, dtype: torch.dtype) -> int:
    """The helper's loop: hold migrated KV heads, answer attention requests until told to stop.

    Returns the number of attention requests served.
    """
    k_pool = v_pool = None
    served = 0
    while True:
        op, a, b, c, d = _recv((_HDR,), torch.long, peer).tolist()
        if op == _STOP:
            return served
        if op == _MIGRATE:
            k_pool = _recv((a, b, c, d), dtype, peer)
            v_pool = _recv((a, b, c, d), dtype, peer)
            continue
        if k_pool is None or v_pool is None:
            raise LlmplanError("attention request before any KV heads were migrated to this worker")
        t, meta_len, nq = a, b, c
        kvh, hd = k_pool.shape[2], k_pool.shape[3]
        seqs = _parse_meta(_recv((meta_len,), torch.long, peer))
        slots = _recv((t,), torch.long, peer)
        q = _recv((t, nq, hd), dtype, peer)
        k_new = _recv((t, kvh, hd), dtype, peer)
        v_new = _recv((t, kvh, hd), dtype, peer)
        nb, bs = k_pool.shape[:2]
        k_pool.view(nb * bs, kvh, hd).index_copy_(0, slots, k_new)
        v_pool.view(nb * bs, kvh, hd).index_copy_(0, slots, v_new)
        out = torch.empty_like(q)
        for rows, table, length in seqs:
            kk = k_pool[table].flatten(0, 1)[:length].unsqueeze(0)
            vv = v_pool[table].flatten(0, 1)[:length].unsqueeze(0)
            qq = q[rows].unsqueeze(0)
            out[rows] = attention(qq, kk, vv, [qq.shape[1]], [length])[0]
        dist.send(out, peer)
        served += 1


# ------------------------------------------------------------------ a two-process harness


def _main(rank: int, port: int, spec, layer: int, at_step: int, out_path: str) -> None:
    from llmplan.migrate.attention_offload import OffloadPlan, offload_attention
    from llmplan.migrate.layer_migration import reference_greedy

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        if rank == 1:
            served = serve_heads(0, getattr(torch, spec.dtype))
            Path(out_path + ".helper").write_text(json.dumps({"served": served}))
            return
        client: RemoteHeadsClient | None = None

        def hook(step, model, kv):
            nonlocal client
            if step != at_step:
                return
            from llmplan.migrate.attention_split import plan_head_split

            cfg = model.cfg
            local, remote = plan_head_split(cfg.num_heads, cfg.num_kv_heads, (1, 1))
            client = RemoteHeadsClient(1, remote, cfg.head_dim, model.dtype)
            client.migrate(*kv.layer(layer))
            offload_attention(model, layer, OffloadPlan("heads", (1, 1), remote=client))

        tokens = reference_greedy(spec, on_step=hook)
        stats = {"requests": 0, "bytes": 0, "migrate_s": 0.0}
        if client is not None:
            stats = {"requests": client.requests, "bytes": client.bytes_sent, "migrate_s": client.migrate_s}
            client.stop()
        else:
            RemoteHeadsClient(1, HeadShard((0,), (0,)), 1, torch.float32).stop()
        Path(out_path).write_text(json.dumps({"tokens": tokens, **stats}))
    finally:
        dist.destroy_process_group()


def run_remote_offload(spec, layer: int, at_step: int, workdir, timeout_s: float = 180.0) -> dict:
    """Greedy run of ``spec`` on one process with layer ``layer``'s second half of KV heads
    migrated at ``at_step`` to a helper process; returns tokens and transfer stats."""
    import torch.multiprocessing as mp

    from llmplan.migrate.layer_migration import _free_port

    out = Path(workdir) / f"remote-attn-{os.getpid()}-{time.time_ns()}.json"
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_main, args=(r, port, spec, layer, at_step, str(out))) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
    if any(p.exitcode != 0 for p in procs):
        raise LlmplanError(f"remote attention workers failed (exit codes {[p.exitcode for p in procs]})")
    res = json.loads(out.read_text())
    res.update(json.loads(Path(str(out) + ".helper").read_text()))
    out.unlink()
    Path(str(out) + ".helper").unlink()
    return res
