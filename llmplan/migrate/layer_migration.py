"""Layer-level weight migration between pipeline-stage workers over torch.distributed.

An instance spans ``world`` worker processes; worker ``r`` holds a contiguous range of the
engine's Llama decoder layers (its pipeline stage) with their paged KV pools. Rank 0 also
drives: it embeds tokens, schedules the steps and collects the sampled tokens. One step:

    rank 0: embed -> its layers -> send hidden -> ... -> last rank: layers -> norm -> lm_head
            -> greedy token ids -> back to rank 0

A **migration** moves the boundary layer(s) of one stage to the neighbouring stage while
requests are in flight, between two steps: the source sends each layer's weights and the KV
blocks its running sequences occupy; the destination builds the layer, loads both, and the
stage map changes. Layer indices are global (the KV block ids stay valid wherever a layer
lives), so the next step simply runs the layer on its new worker, and greedy output is
token-identical to a run without migration.

Each migration is timed and logged beside the controller's estimate ``T = S/B + T_sync``, with
``B`` and ``T_sync`` measured on the same link at start-up (a probe transfer and a barrier),
so the log shows how good the estimate is. Works with gloo on CPU (tests: 2-4 processes on
127.0.0.1) and NCCL on GPUs.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from llmplan.errors import LlmplanError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MigrationOrder:
    at_step: int  # run before this decode step
    layers: tuple[int, ...]
    src: int
    dst: int


@dataclass(slots=True)
class MigrationRecord:
    step: int
    layers: tuple[int, ...]
    src: int
    dst: int
    bytes: int
    measured_s: float
    estimate_s: float
    link_bytes_per_s: float
    sync_s: float


@dataclass(slots=True)
class PipelineRun:
    tokens: list[list[int]]
    migrations: list[MigrationRecord] = field(default_factory=list)
    final_ranges: list[tuple[int, int]] = field(default_factory=list)


@dataclass(slots=True)
class RunSpec:
    """What every worker needs to build the same model and replay the same schedule."""

    model: str  # engine catalog name (e.g. "llama-tiny"), dummy weights
    seed: int
    ranges: list[tuple[int, int]]
    prompts: list[list[int]]
    max_new_tokens: int
    arrivals: list[int] = field(default_factory=list)  # step at which each prompt arrives (default 0)
    migrations: list[MigrationOrder] = field(default_factory=list)
    block_size: int = 16
    dtype: str = "float32"


def validate_ranges(ranges: Sequence[tuple[int, int]], num_layers: int) -> None:
    if not ranges or ranges[0][0] != 0 or ranges[-1][1] != num_layers:
        raise LlmplanError(f"stage ranges {list(ranges)} must cover layers 0..{num_layers} in order")
    for (a, b), (c, _) in zip(ranges, ranges[1:], strict=False):
        if not a < b == c:
            raise LlmplanError(f"stage ranges {list(ranges)} must be contiguous and non-empty")
    if ranges[-1][0] >= ranges[-1][1]:
        raise LlmplanError(f"stage ranges {list(ranges)} must be non-empty")


def apply_move(
    ranges: list[tuple[int, int]], layers: Sequence[int], src: int, dst: int
) -> list[tuple[int, int]]:
    """The stage map after moving ``layers`` from stage ``src`` to the adjacent stage ``dst``."""
    if abs(src - dst) != 1:
        raise LlmplanError(f"layer migration moves boundary layers between adjacent stages, not {src}->{dst}")
    lo, hi = ranges[src]
    k = len(layers)
    if k == 0 or k >= hi - lo:
        raise LlmplanError(f"stage {src} holds layers [{lo}, {hi}); cannot move {k} and keep one")
    expect = tuple(range(hi - k, hi)) if dst == src + 1 else tuple(range(lo, lo + k))
    if tuple(layers) != expect:
        raise LlmplanError(
            f"only boundary layers {expect} of stage {src} can move to stage {dst}, not {tuple(layers)}"
        )
    out = list(ranges)
    if dst == src + 1:
        out[src], out[dst] = (lo, hi - k), (hi - k, ranges[dst][1])
    else:
        out[src], out[dst] = (lo + k, hi), (ranges[dst][0], lo + k)
    return out


# ---------------------------------------------------------------------------- the worker


class StageWorker:
    """One process's share of the model: the layers of its stage and their KV pools."""

    def __init__(self, spec: RunSpec, rank: int, world: int, num_blocks: int) -> None:
        from llmplan.runtime.engine.config import catalog_config
        from llmplan.runtime.engine.kvcache import PagedKVCache
        from llmplan.runtime.engine.loader import init_dummy_weights
        from llmplan.runtime.engine.model import LlamaModel

        self.cfg = catalog_config(spec.model)
        validate_ranges(spec.ranges, self.cfg.num_layers)
        self.rank, self.world = rank, world
        self.dtype = getattr(torch, spec.dtype)
        self.device = torch.device("cpu")
        self.ranges = list(spec.ranges)
        # Dummy weights are generated for the whole model from one seed (so every process
        # agrees on them); a worker keeps only its stage and frees the rest at once.
        full = LlamaModel(self.cfg, [self.device] * self.cfg.num_layers, self.dtype)
        init_dummy_weights(full, seed=spec.seed)
        lo, hi = self.ranges[rank]
        self.layers = {i: full.layers[i] for i in range(lo, hi)}
        self.embed = full.embed_tokens if rank == 0 else None
        self.norm = full.norm if rank == world - 1 else None
        self.lm_head = full.lm_head_weight if rank == world - 1 else None
        self.rope = full.ropes[self.device]
        del full
        # The first meta-device construction and the first ``to_empty`` each pay a one-off
        # multi-second lazy import; pay them here, not inside the first migration.
        from llmplan.runtime.engine.model import DecoderLayer

        DecoderLayer(self.cfg, 0, torch.device("meta"), self.dtype).to_empty(device=self.device)
        devices = [self.device if lo <= i < hi else None for i in range(self.cfg.num_layers)]
        self.kv = PagedKVCache(self.cfg, num_blocks, spec.block_size, devices, self.dtype)  # type: ignore[arg-type]

    @property
    def is_first(self) -> bool:
        return self.ranges[self.rank][0] == 0 and self.rank == 0

    @torch.inference_mode()
    def run_layers(self, x: torch.Tensor, positions: torch.Tensor, meta) -> torch.Tensor:
        cos, sin = self.rope(positions)
        lo, hi = self.ranges[self.rank]
        for i in range(lo, hi):
            x = self.layers[i](x, cos, sin, meta, self.kv)
        return x

    # -- migration
    def _layer_tensors(self, layer) -> list[torch.Tensor]:
        return [t for _, t in sorted(layer.state_dict(keep_vars=True).items())]

    def send_layers(self, layers: Sequence[int], dst: int, blocks: torch.Tensor) -> int:
        """Weights and the listed KV blocks of each layer, one flat message per layer."""
        sent = 0
        for i in layers:
            layer = self.layers.pop(i)
            k, v = self.kv.k[i], self.kv.v[i]
            parts = [*self._layer_tensors(layer), k[blocks], v[blocks]]
            flat = torch.cat([t.detach().reshape(-1) for t in parts])
            dist.send(flat, dst)
            sent += flat.numel() * flat.element_size()
            self.kv.k[i] = self.kv.v[i] = None  # free the pools: the layer lives elsewhere now
        return sent

    def recv_layers(self, layers: Sequence[int], src: int, blocks: torch.Tensor) -> int:
        from llmplan.runtime.engine.model import DecoderLayer

        got = 0
        shape = (self.kv.num_blocks, self.kv.block_size, self.cfg.num_kv_heads, self.cfg.head_dim)
        for i in layers:
            # Built on the meta device: no time wasted initialising weights about to be overwritten.
            layer = DecoderLayer(self.cfg, i, torch.device("meta"), self.dtype).to_empty(device=self.device)
            layer.device = self.device
            params = self._layer_tensors(layer)
            kv_numel = len(blocks) * shape[1] * shape[2] * shape[3]
            flat = torch.empty(sum(t.numel() for t in params) + 2 * kv_numel, dtype=self.dtype)
            dist.recv(flat, src)
            got += flat.numel() * flat.element_size()
            off = 0
            with torch.no_grad():
                for t in params:
                    t.copy_(flat[off : off + t.numel()].view_as(t))
                    off += t.numel()
                pools = []
                for _ in range(2):
                    pool = torch.zeros(shape, dtype=self.dtype, device=self.device)
                    pool[blocks] = flat[off : off + kv_numel].view(len(blocks), *shape[1:])
                    off += kv_numel
                    pools.append(pool)
            self.layers[i] = layer
            self.kv.k[i], self.kv.v[i] = pools
        return got


def probe_link(nbytes: int = 8 << 20) -> tuple[float, float]:
    """Measured (bytes/s, barrier seconds) between rank 0 and rank 1, agreed on every rank."""
    buf = torch.zeros(nbytes // 4, dtype=torch.float32)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(3):
        dist.barrier()
    sync = (time.perf_counter() - t0) / 3
    dist.barrier()
    t0 = time.perf_counter()
    if dist.get_rank() == 0:
        dist.send(buf, 1)
        dist.recv(buf[:1], 1)
    elif dist.get_rank() == 1:
        dist.recv(buf, 0)
        dist.send(buf[:1], 0)
    dt = time.perf_counter() - t0
    out = [nbytes / dt if dist.get_rank() == 0 else 0.0, sync]
    dist.broadcast_object_list(out, src=0)
    return float(out[0]), float(out[1])


def _worker_main(rank: int, world: int, port: int, spec: RunSpec, out_path: str) -> None:
    from llmplan.runtime.engine.step_inputs import build_step_inputs

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        n = len(spec.prompts)
        bs = spec.block_size
        per_seq = -(-(max(len(p) for p in spec.prompts) + spec.max_new_tokens) // bs)
        w = StageWorker(spec, rank, world, num_blocks=n * per_seq)
        bw, sync = probe_link() if world > 1 else (float("inf"), 0.0)
        arrivals = spec.arrivals or [0] * n
        tokens: list[list[int]] = [[] for _ in range(n)]
        ctx = [0] * n
        records: list[MigrationRecord] = []
        orders = {m.at_step: m for m in spec.migrations}
        step = 0
        while True:
            # -- migrate between steps, while every running sequence keeps its KV
            m = orders.get(step)
            if m is not None:
                active = [i for i in range(n) if ctx[i] > 0]
                blocks = torch.tensor(
                    sorted({i * per_seq + b for i in active for b in range(per_seq)}), dtype=torch.long
                )
                dist.barrier()
                t0 = time.perf_counter()
                moved = 0
                if rank == m.src:
                    moved = w.send_layers(m.layers, m.dst, blocks)
                elif rank == m.dst:
                    moved = w.recv_layers(m.layers, m.src, blocks)
                w.ranges = apply_move(w.ranges, m.layers, m.src, m.dst)
                dist.barrier()
                measured = time.perf_counter() - t0
                info = [moved, measured]
                dist.broadcast_object_list(info, src=m.src)
                nbytes, measured = int(info[0]), float(info[1])
                rec = MigrationRecord(
                    step, tuple(m.layers), m.src, m.dst, nbytes, measured, nbytes / bw + sync, bw, sync
                )
                records.append(rec)
                if rank == 0:
                    log.info(
                        "layer migration %s: %d->%d, %.1f MB in %.4f s (estimate %.4f s)",
                        m.layers,
                        m.src,
                        m.dst,
                        nbytes / 1e6,
                        measured,
                        rec.estimate_s,
                    )
            # -- one engine step: prefill the arrivals, decode the rest
            work, owners = _step_work(step, spec, arrivals, tokens, ctx, per_seq)
            if not work and all(a <= step for a in arrivals):
                break
            if work:
                si = build_step_inputs(work, bs, w.device)
                t = int(si.input_ids.numel())
                lo, hi = w.ranges[rank]
                if rank == 0:
                    x = w.embed(si.input_ids)
                else:
                    x = torch.empty((t, w.cfg.hidden_size), dtype=w.dtype)
                    dist.recv(x, rank - 1)
                x = w.run_layers(x, si.positions, si.meta)
                if rank < world - 1:
                    dist.send(x.contiguous(), rank + 1)
                    nxt = torch.empty(len(si.order), dtype=torch.long)
                    if rank == 0:
                        dist.recv(nxt, world - 1)
                else:
                    h = w.norm(x[si.logits_index])
                    nxt = torch.nn.functional.linear(h, w.lm_head).float().argmax(-1)
                    if world > 1:
                        dist.send(nxt, 0)
                for k_row, idx in enumerate(si.order):
                    i = owners[idx]
                    ctx[i] += len(work[idx].token_ids)
                    tokens[i].append(int(nxt[k_row]))
            step += 1
        if rank == 0:
            run = PipelineRun(tokens, records, w.ranges)
            Path(out_path).write_text(json.dumps(asdict(run)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_pipeline(
    spec: RunSpec, world: int, workdir: str | os.PathLike, timeout_s: float = 180.0
) -> PipelineRun:
    """Run ``spec`` on ``world`` stage processes (gloo, 127.0.0.1); returns rank 0's result."""
    import torch.multiprocessing as mp

    if len(spec.ranges) != world:
        raise LlmplanError(f"{len(spec.ranges)} stage ranges for {world} workers; give one range per worker")
    out = Path(workdir) / f"pipeline-{os.getpid()}-{time.time_ns()}.json"
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker_main, args=(r, world, port, spec, str(out))) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    if alive or any(p.exitcode != 0 for p in procs):
        codes = [p.exitcode for p in procs]
        raise LlmplanError(f"pipeline workers failed (exit codes {codes}); see their stderr above")
    d = json.loads(out.read_text())
    out.unlink()
    return PipelineRun(
        tokens=d["tokens"],
        migrations=[MigrationRecord(**{**r, "layers": tuple(r["layers"])}) for r in d["migrations"]],
        final_ranges=[tuple(r) for r in d["final_ranges"]],
    )


def reference_greedy(
    spec: RunSpec, on_step: Callable[[int, Any, Any], None] | None = None
) -> list[list[int]]:
    """The same schedule on one process with the engine's whole LlamaModel: the ground truth.

    ``on_step(step, model, kv)`` runs before each step (e.g. to switch attention offloading on).
    """
    from llmplan.runtime.engine.config import catalog_config
    from llmplan.runtime.engine.kvcache import PagedKVCache
    from llmplan.runtime.engine.loader import init_dummy_weights
    from llmplan.runtime.engine.model import LlamaModel
    from llmplan.runtime.engine.step_inputs import build_step_inputs

    cfg = catalog_config(spec.model)
    dtype = getattr(torch, spec.dtype)
    cpu = torch.device("cpu")
    model = LlamaModel(cfg, [cpu] * cfg.num_layers, dtype)
    init_dummy_weights(model, seed=spec.seed)
    n, bs = len(spec.prompts), spec.block_size
    per_seq = -(-(max(len(p) for p in spec.prompts) + spec.max_new_tokens) // bs)
    kv = PagedKVCache(cfg, n * per_seq, bs, [cpu] * cfg.num_layers, dtype)
    arrivals = spec.arrivals or [0] * n
    tokens: list[list[int]] = [[] for _ in range(n)]
    ctx = [0] * n
    step = 0
    while True:
        if on_step is not None:
            on_step(step, model, kv)
        work, owners = _step_work(step, spec, arrivals, tokens, ctx, per_seq)
        if not work and all(a <= step for a in arrivals):
            break
        if work:
            si = build_step_inputs(work, bs, cpu)
            logits = model(si.input_ids, si.positions, si.meta, kv, si.logits_index)
            nxt = logits.argmax(-1)
            for k_row, idx in enumerate(si.order):
                i = owners[idx]
                ctx[i] += len(work[idx].token_ids)
                tokens[i].append(int(nxt[k_row]))
        step += 1
    return tokens


def _step_work(step, spec, arrivals, tokens, ctx, per_seq) -> tuple[list, list[int]]:
    """This step's work, the same for the staged run and the single-process reference: arrived
    sequences with no KV yet prefill their prompt, the others decode their last token."""
    from llmplan.runtime.engine.step_inputs import SeqWork

    work: list[SeqWork] = []
    owners: list[int] = []
    for i in range(len(arrivals)):
        if arrivals[i] > step or len(tokens[i]) >= spec.max_new_tokens:
            continue
        blocks_i = list(range(i * per_seq, (i + 1) * per_seq))
        if ctx[i] == 0:
            work.append(SeqWork(list(spec.prompts[i]), 0, blocks_i, True, True))
        else:
            work.append(SeqWork([tokens[i][-1]], ctx[i], blocks_i, False, True))
        owners.append(i)
    return work, owners
