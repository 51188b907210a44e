"""Rank 0 of a multi-worker instance: the :class:`PipelineExecutor`, the core's ``Executor``.

The serving core (Scheduler, BlockManager, batch policy, LLMEngine) is unchanged: it hands each
:class:`~llmplan.runtime.core.types.ScheduledBatch` to this executor as it would to the
single-process :class:`~llmplan.runtime.engine.executor.TorchExecutor`. Here the batch's work is
sent to every worker over its control pipe, the hidden state runs through the stages over the
instance's process group, and rank 0 samples with each request's own sampler.

The executor composes the parts of :mod:`llmplan.runtime.workers`: the worker processes
(:mod:`.pool`), the moves between steps (:mod:`.migration`: :meth:`PipelineExecutor.migrate`,
:meth:`PipelineExecutor.offload_attention`, :meth:`PipelineExecutor.restore_attention`; all
thread-safe, for the admin endpoints) and the migration controller run every
``control_interval_s`` (:mod:`.control`). Every step and migration is bounded by the process
group's timeout; a dead worker turns into one clear :class:`WorkerFailure` (and every later step
fails fast with it), which the engine loop reports to the requests in flight.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.core.types import ScheduledBatch, StepResult
from llmplan.runtime.engine.executor import sampler_of, seq_work
from llmplan.runtime.engine.sampling import sample
from llmplan.runtime.engine.step_inputs import build_step_inputs
from llmplan.runtime.workers.comm import Comm, free_port, probe_link
from llmplan.runtime.workers.control import ControlLoop, worker_loads
from llmplan.runtime.workers.migration import BetweenSteps, Links, Migrator
from llmplan.runtime.workers.offload import HeadOffload
from llmplan.runtime.workers.pool import WorkerFailure, WorkerPool
from llmplan.runtime.workers.protocol import Hello, ProbeMsg, Ready, StepMsg
from llmplan.runtime.workers.stage import StageSource, StageWorker, worker_device
from llmplan.runtime.workers.stages import MigrationRecord, OffloadRecord, Ranges, apply_move, validate_ranges

__all__ = ["PipelineExecutor", "PipelineStats", "WorkerFailure"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PipelineStats:
    """A consistent snapshot for /metrics and the admin API."""

    ranges: Ranges
    busy_s_total: list[float]  # per worker, compute seconds in steps
    step_s_total: float
    migrations: Counter  # by trigger
    last: MigrationRecord | None
    measured_s_total: float
    estimate_s_total: float
    bytes_total: int
    not_applied: Counter  # controller decisions not executed, by kind
    steps: int
    offloads: Counter = field(default_factory=Counter)  # attention offloads executed, by trigger
    restores: Counter = field(default_factory=Counter)  # layers whose offload was undone, by trigger
    offload_measured_s_total: float = 0.0
    offload_estimate_s_total: float = 0.0
    offload_bytes_total: int = 0
    hosted_kv_heads: list[int] = field(default_factory=list)  # per worker: offloaded heads it holds


class PipelineExecutor:
    def __init__(
        self,
        source: StageSource,
        ranges: Sequence[tuple[int, int]],
        *,
        blocks_in_use: Callable[[], Iterable[int]] | None = None,
        timeout_s: float = 120.0,
        startup_timeout_s: float = 300.0,
        worker_threads: int | None = None,
        probe_bytes: int = 8 << 20,
        capacity_bytes: float | None = None,
    ) -> None:
        self.source = source
        self.cfg = source.config()
        validate_ranges(ranges, self.cfg.num_layers)
        self.world = len(ranges)
        if self.world < 2:
            raise LlmplanError("a pipeline executor needs at least 2 workers; use the engine's TorchExecutor")
        self.block_size = source.block_size
        self.blocks_in_use = blocks_in_use or (lambda: ())
        self.timeout_s = timeout_s
        self._lock = threading.Lock()  # held by a step or a migration: they never overlap
        self.steps = 0
        self._busy = [0.0] * self.world  # per worker, compute seconds since the last loads()
        self._wall = 0.0
        self._busy_total = [0.0] * self.world
        self._wall_total = 0.0
        self.control: ControlLoop | None = None
        self._t0 = time.monotonic()

        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        port = free_port()
        threads = worker_threads or max(1, (os.cpu_count() or 1) // self.world)
        self.pool = WorkerPool(source, ranges, port, timeout_s, threads)
        self._between = BetweenSteps(self._lock, timeout_s, self.pool.check_alive)
        atexit.register(self.close)
        try:
            self.device = worker_device(source.device, 0)
            self.stage = StageWorker(source, 0, self.world, list(ranges))
            self.pool.stage_ranges = lambda: self.stage.ranges
            # Join the group only once every worker is up to it, so a worker that dies while
            # importing is an error at once rather than a rendezvous timeout.
            for r in range(1, self.world):
                self.pool.await_msg(r, Hello, startup_timeout_s)
            self.comm = Comm.connect(0, self.world, port, self.device, timeout_s, connect_timeout_s=60.0)
            self._ready = [self.pool.await_msg(r, Ready, startup_timeout_s) for r in range(1, self.world)]
            # B and T_sync of every adjacent link, for the estimate T = S/B + T_sync.
            self.links: Links = {}
            for a in range(self.world - 1):
                self.pool.broadcast(ProbeMsg(a, a + 1, probe_bytes))
                self.links[(a, a + 1)] = probe_link(self.comm, a, a + 1, probe_bytes)
        except BaseException:
            self.close()
            raise
        self.migrator = Migrator(self.pool, self.stage, self.comm, self.cfg.num_kv_heads, self.links,
                                 self.blocks_in_use, lambda: self.steps)
        if capacity_bytes is None:
            if self.device.type == "cuda":
                capacity_bytes = float(torch.cuda.mem_get_info(self.device)[1])
            else:
                import psutil

                capacity_bytes = psutil.virtual_memory().total / self.world
        self.capacity_bytes = float(capacity_bytes)
        log.info("pipeline: %d workers, layers %s, links %s", self.world, self.ranges,
                 {f"{a}-{b}": f"{bw / 1e9:.2f} GB/s, sync {s * 1e3:.2f} ms"
                  for (a, b), (bw, s) in self.links.items()})

    # ------------------------------------------------------------------ state
    @property
    def ranges(self) -> Ranges:
        return list(self.stage.ranges)

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of ranks 1..N-1."""
        return self.pool.pids

    @property
    def failed(self) -> str | None:
        return self.pool.failure

    @property
    def records(self) -> list[MigrationRecord]:
        return self.migrator.records

    @property
    def offload_records(self) -> list[OffloadRecord]:
        return self.migrator.offload_records

    @property
    def offloads(self) -> dict[int, HeadOffload]:
        return dict(self.stage.offloads)

    @property
    def controller(self):
        return self.control.controller if self.control is not None else None

    # ------------------------------------------------------------------ the Executor protocol
    def execute(self, batch: ScheduledBatch) -> StepResult:
        if not batch.items:
            return StepResult(duration_s=0.0, next_tokens={})
        with self._lock:
            self.pool.check_alive()
            self._between.drain()
            self._maybe_control()
            self.pool.check_alive()  # a migration may have found a dead worker
            t0 = time.perf_counter()
            work = [seq_work(it) for it in batch.items]
            samplers = [sampler_of(it) for it in batch.items]
            inputs = build_step_inputs(work, self.block_size, self.device)
            self.pool.broadcast(StepMsg(work))
            try:
                logits, times = self.stage.forward(self.comm, inputs)
            except WorkerFailure:
                raise
            except Exception as e:  # a collective failed: a peer died or timed out
                raise self.pool.comm_error(f"step {self.steps}", e) from e
            tokens = sample(logits, [samplers[i] for i in inputs.order]) if logits is not None else []
            nxt = {batch.items[i].seq.rid: t
                   for i, t in zip(inputs.order, tokens, strict=True) if t is not None}
            dt = time.perf_counter() - t0
            self.steps += 1
            self._wall += dt
            self._wall_total += dt
            for r in range(self.world):
                self._busy[r] += float(times[r])
                self._busy_total[r] += float(times[r])
            return StepResult(duration_s=dt, next_tokens=nxt)

    # ------------------------------------------------------------------ migration (thread-safe)
    def check_move(self, layers: Sequence[int], src: int, dst: int) -> None:
        """Raise LlmplanError if the move is invalid for the current stage map."""
        apply_move(self.ranges, tuple(layers), src, dst)

    def migrate(self, layers: Sequence[int], src: int, dst: int, trigger: str = "admin",
                timeout_s: float | None = None) -> MigrationRecord:
        """Move ``layers`` (weights and KV in use) from worker ``src`` to ``dst`` between two steps.
        Offloaded heads of a moved layer come back to it first."""
        self.check_move(layers, src, dst)
        return self._between.run(lambda: self.migrator.migrate(tuple(layers), src, dst, trigger),
                                 f"migration of layers {list(layers)}", timeout_s)

    def offload_attention(self, layers: Sequence[int], src: int, dst: int, kv_heads: int,
                          trigger: str = "admin", timeout_s: float | None = None) -> OffloadRecord:
        """Attention migration: the last ``kv_heads`` KV heads of each of ``layers`` (held by
        worker ``src``), with their query groups and KV in use, to worker ``dst``."""
        self.migrator.check_offload(tuple(layers), src, dst, kv_heads)
        return self._between.run(lambda: self.migrator.offload(tuple(layers), src, dst, kv_heads, trigger),
                                 f"attention offload of layers {list(layers)}", timeout_s)

    def restore_attention(self, layers: Sequence[int] | None = None, trigger: str = "admin",
                          timeout_s: float | None = None) -> list[int]:
        """Take offloaded heads back to their layers' owners (all offloads when ``layers`` is None);
        returns the layers restored."""
        return self._between.run(lambda: self.migrator.restore(layers, trigger), "attention restore",
                                 timeout_s)

    # ------------------------------------------------------------------ load and control
    def enable_controller(self, controller, interval_s: float) -> None:
        self.control = ControlLoop(controller, interval_s)

    def bandwidth(self, a, b) -> tuple[float, float]:
        """The controller's BandwidthFn: the probed link between two workers (latency in sync_s)."""
        if a.rank is None or b.rank is None:
            raise LlmplanError(f"workers {a.name} and {b.name} are not ranks of this instance")
        bw, _ = self.migrator.link(a.rank, b.rank)
        return bw, 0.0

    def loads(self):
        """One WorkerLoad per worker over the window since the last call (which it closes); see
        :func:`~llmplan.runtime.workers.control.worker_loads`."""
        wall = self._wall
        share = [b / wall if wall > 0 else 0.0 for b in self._busy]
        self._busy, self._wall = [0.0] * self.world, 0.0
        used = len(set(self.blocks_in_use()))
        return worker_loads(self.stage, self.ranges, share, used, self.capacity_bytes, self.cfg.num_kv_heads)

    def _maybe_control(self) -> None:
        if self.control is None:
            return
        now = time.monotonic() - self._t0
        if self.control.due(now):
            self.control.step(now, self.loads(), self.migrator)

    # ------------------------------------------------------------------ metrics
    def stats(self) -> PipelineStats:
        m = self.migrator
        recs = list(m.records)
        return PipelineStats(
            ranges=self.ranges,
            busy_s_total=list(self._busy_total),
            step_s_total=self._wall_total,
            migrations=Counter(m.by_trigger),
            last=recs[-1] if recs else None,
            measured_s_total=sum(r.measured_s for r in recs),
            estimate_s_total=sum(r.estimate_s for r in recs),
            bytes_total=sum(r.bytes for r in recs),
            not_applied=Counter(self.control.not_applied if self.control is not None else ()),
            steps=self.steps,
            offloads=Counter(m.offloads_by_trigger),
            restores=Counter(m.restores_by_trigger),
            offload_measured_s_total=sum(r.measured_s for r in m.offload_records),
            offload_estimate_s_total=sum(r.estimate_s for r in m.offload_records),
            offload_bytes_total=sum(r.bytes for r in m.offload_records),
            hosted_kv_heads=[sum(o.kv_heads for o in self.stage.offloads.values() if o.host == r)
                             for r in range(self.world)],
        )

    def collectors(self) -> list:
        from llmplan.migrate.metrics import ControllerCollector, PipelineCollector

        out = [PipelineCollector(self.stats)]
        if self.controller is not None:
            out.append(ControllerCollector(self.controller))
        return out

    # ------------------------------------------------------------------ shutdown
    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the workers (idempotent); kills any that do not exit within ``timeout_s``."""
        if not self.pool.close(timeout_s):
            return
        if hasattr(self, "comm"):
            self.comm.close()
        atexit.unregister(self.close)
