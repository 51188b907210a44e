"""Layer-level weight migration between pipeline-stage workers: the scripted run.

An instance spans ``world`` worker processes; worker ``r`` holds a contiguous range of the
engine's Llama decoder layers (its pipeline stage) with their paged KV pools. The stage worker,
the process group and the link probe are those of ``llmplan serve --workers N``
(:mod:`llmplan.runtime.workers`); this module replays a fixed schedule on them, for tests and
for measuring migrations outside a server. One step:

    rank 0: embed -> its layers -> hidden to rank 1 -> ... -> last rank: its layers
            -> the sampling rows back to rank 0 -> norm -> lm_head -> greedy token ids

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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.workers.comm import Comm, probe_link
from llmplan.runtime.workers.comm import free_port as _free_port
from llmplan.runtime.workers.stage import StageSource, StageWorker
from llmplan.runtime.workers.stages import MigrationRecord, apply_move, validate_ranges

__all__ = [
    "MigrationOrder", "MigrationRecord", "PipelineRun", "RunSpec", "StageWorker", "apply_move",
    "probe_link", "reference_greedy", "run_pipeline", "validate_ranges", "_free_port",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class MigrationOrder:
    at_step: int  # run before this decode step
    layers: tuple[int, ...]
    src: int
    dst: int


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

    def per_seq_blocks(self) -> int:
        return -(-(max(len(p) for p in self.prompts) + self.max_new_tokens) // self.block_size)


def _worker_main(rank: int, world: int, port: int, spec: RunSpec, out_path: str) -> None:
    from llmplan.runtime.engine.sampling import greedy
    from llmplan.runtime.engine.step_inputs import build_step_inputs

    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    comm = Comm.connect(rank, world, port, torch.device("cpu"), timeout_s=120.0, connect_timeout_s=120.0)
    try:
        n = len(spec.prompts)
        per_seq = spec.per_seq_blocks()
        source = StageSource(dummy_weights=spec.model, seed=spec.seed, dtype=spec.dtype,
                             block_size=spec.block_size, num_blocks=n * per_seq)
        w = StageWorker(source, rank, world, spec.ranges)
        bw, sync = probe_link(comm) if world > 1 else (float("inf"), 0.0)
        arrivals = spec.arrivals or [0] * n
        tokens: list[list[int]] = [[] for _ in range(n)]
        context_lens = [0] * n
        records: list[MigrationRecord] = []
        orders = {m.at_step: m for m in spec.migrations}
        step = 0
        while True:
            # -- migrate between steps, while every running sequence keeps its KV
            m = orders.get(step)
            if m is not None:
                active = [i for i in range(n) if context_lens[i] > 0]
                blocks = sorted({i * per_seq + b for i in active for b in range(per_seq)})
                measured = w.migrate(comm, m.layers, m.src, m.dst, blocks)
                if rank == 0:  # the probe's bandwidth is known on rank 0
                    nbytes = w.migration_bytes(len(m.layers), len(blocks))
                    rec = MigrationRecord(step, tuple(m.layers), m.src, m.dst, nbytes, measured,
                                          nbytes / bw + sync, bw, sync)
                    records.append(rec)
                    log.info("layer migration %s: %d->%d, %.1f MB in %.4f s (estimate %.4f s)",
                             m.layers, m.src, m.dst, nbytes / 1e6, measured, rec.estimate_s)
            # -- one engine step: prefill the arrivals, decode the rest
            work, owners = _step_work(step, spec, arrivals, tokens, context_lens, per_seq)
            if not work and all(a <= step for a in arrivals):
                break
            if work:
                si = build_step_inputs(work, spec.block_size, w.device)
                logits, _ = w.forward(comm, si)
                # Only rank 0 samples; the others follow the schedule with placeholder tokens.
                nxt = greedy(logits).tolist() if rank == 0 else [0] * len(si.order)
                for k_row, idx in enumerate(si.order):
                    i = owners[idx]
                    context_lens[i] += len(work[idx].token_ids)
                    tokens[i].append(int(nxt[k_row]))
            step += 1
        if rank == 0:
            run = PipelineRun(tokens, records, w.ranges)
            Path(out_path).write_text(json.dumps(asdict(run)))
    finally:
        comm.close()


def run_pipeline(
    spec: RunSpec, world: int, workdir: str | os.PathLike, timeout_s: float = 180.0
) -> PipelineRun:
    """Run ``spec`` on ``world`` stage processes (gloo, 127.0.0.1); returns rank 0's result."""
    import torch.multiprocessing as mp

    if len(spec.ranges) != world:
        raise LlmplanError(f"{len(spec.ranges)} stage ranges for {world} workers; give one range per worker")
    validate_ranges(spec.ranges, _num_layers(spec.model))
    out = Path(workdir) / f"pipeline-{os.getpid()}-{time.time_ns()}.json"
    mp_ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [mp_ctx.Process(target=_worker_main, args=(r, world, port, spec, str(out))) for r in range(world)]
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


def _num_layers(model: str) -> int:
    from llmplan.runtime.engine.config import catalog_config

    return catalog_config(model).num_layers


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
    from llmplan.runtime.engine.sampling import greedy
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
    context_lens = [0] * n
    step = 0
    while True:
        if on_step is not None:
            on_step(step, model, kv)
        work, owners = _step_work(step, spec, arrivals, tokens, context_lens, per_seq)
        if not work and all(a <= step for a in arrivals):
            break
        if work:
            si = build_step_inputs(work, bs, cpu)
            logits = model(si.input_ids, si.positions, si.meta, kv, si.logits_index)
            nxt = greedy(logits)
            for k_row, idx in enumerate(si.order):
                i = owners[idx]
                context_lens[i] += len(work[idx].token_ids)
                tokens[i].append(int(nxt[k_row]))
        step += 1
    return tokens


def _step_work(step, spec, arrivals, tokens, context_lens, per_seq) -> tuple[list, list[int]]:
    """This step's work, the same for the staged run and the single-process reference: arrived
    sequences with no KV yet prefill their prompt, the others decode their last token."""
    from llmplan.runtime.engine.step_inputs import SeqWork

    work: list[SeqWork] = []
    owners: list[int] = []
    for i in range(len(arrivals)):
        if arrivals[i] > step or len(tokens[i]) >= spec.max_new_tokens:
            continue
        blocks_i = list(range(i * per_seq, (i + 1) * per_seq))
        if context_lens[i] == 0:
            work.append(SeqWork(list(spec.prompts[i]), 0, blocks_i, True, True))
        else:
            work.append(SeqWork([tokens[i][-1]], context_lens[i], blocks_i, False, True))
        owners.append(i)
    return work, owners
