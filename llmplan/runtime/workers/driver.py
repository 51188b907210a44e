"""Rank 0 of a multi-worker instance: the :class:`PipelineExecutor`, the core's ``Executor``.

The serving core (Scheduler, BlockManager, batch policy, LLMEngine) is unchanged: it hands each
:class:`~llmplan.runtime.core.types.ScheduledBatch` to this executor as it would to the
single-process :class:`~llmplan.runtime.engine.executor.TorchExecutor`. Here the batch's work is
sent to every worker over its control pipe, the hidden state runs through the stages over the
instance's process group, and rank 0 samples with each request's own sampler.

Between two steps the executor can move boundary layers from one worker to its neighbour
(:meth:`PipelineExecutor.migrate`), offload the last KV heads of layers -- their KV and their
attention -- to any other worker and take them back (:meth:`PipelineExecutor.offload_attention`,
:meth:`PipelineExecutor.restore_attention`; all thread-safe, for the admin endpoints), and runs
the :class:`~llmplan.migrate.controller.MigrationController` every ``control_interval_s`` over
live :class:`~llmplan.migrate.controller.WorkerLoad`\\ s, executing both kinds of its decisions.
Every step and migration is bounded by the process group's timeout; a dead worker turns into one
clear :class:`WorkerFailure` (and every later step fails fast with it), which the engine loop
reports to the requests in flight.
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
from typing import Any

import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.core.types import ScheduledBatch, StepResult
from llmplan.runtime.engine.executor import sampler_of, seq_work
from llmplan.runtime.engine.sampling import sample
from llmplan.runtime.engine.step_inputs import build_step_inputs
from llmplan.runtime.workers.comm import Comm, free_port, probe_link
from llmplan.runtime.workers.offload import HeadOffload, check_offload
from llmplan.runtime.workers.protocol import (
    Failed,
    Hello,
    MigrateMsg,
    OffloadMsg,
    ProbeMsg,
    Ready,
    RestoreMsg,
    StepMsg,
    StopMsg,
)
from llmplan.runtime.workers.stage import StageSource, StageWorker, worker_device
from llmplan.runtime.workers.stages import MigrationRecord, OffloadRecord, Ranges, apply_move, validate_ranges
from llmplan.runtime.workers.worker import worker_main

log = logging.getLogger(__name__)


class WorkerFailure(LlmplanError):
    """A worker of the instance died or stopped answering; the instance cannot serve."""


@dataclass(slots=True)
class _Pending:
    run: Callable[[], Any]  # called by whichever thread holds the step lock
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


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
        import torch.multiprocessing as mp

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
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()
        self._failure: str | None = None
        self._closed = False
        self.steps = 0
        self.records: list[MigrationRecord] = []
        self._by_trigger: Counter = Counter()
        self._not_applied: Counter = Counter()
        self.offload_records: list[OffloadRecord] = []
        self._offloads: Counter = Counter()
        self._restores: Counter = Counter()
        self._busy = [0.0] * self.world
        self._wall = 0.0
        self._busy_total = [0.0] * self.world
        self._wall_total = 0.0
        self.controller = None
        self.control_interval_s = 1.0
        self._t0 = time.monotonic()
        self._last_control = 0.0

        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        port = free_port()
        ctx = mp.get_context("spawn")
        self._conns = []
        self._procs = []
        threads = worker_threads or max(1, (os.cpu_count() or 1) // self.world)
        for r in range(1, self.world):
            parent, child = ctx.Pipe()
            p = ctx.Process(
                target=worker_main,
                args=(r, self.world, port, source, list(ranges), child, timeout_s, threads),
                name=f"llmplan-worker-{r}",
                daemon=True,
            )
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)
        atexit.register(self.close)
        try:
            self.device = worker_device(source.device, 0)
            self.stage = StageWorker(source, 0, self.world, list(ranges))
            # Join the group only once every worker is up to it, so a worker that dies while
            # importing is an error at once rather than a rendezvous timeout.
            for r in range(1, self.world):
                self._await(r, Hello, startup_timeout_s)
            self.comm = Comm.connect(0, self.world, port, self.device, timeout_s, connect_timeout_s=60.0)
            self._ready = [self._await(r, Ready, startup_timeout_s) for r in range(1, self.world)]
            # B and T_sync of every adjacent link, for the estimate T = S/B + T_sync.
            self.links: dict[tuple[int, int], tuple[float, float]] = {}
            for a in range(self.world - 1):
                self._broadcast(ProbeMsg(a, a + 1, probe_bytes))
                self.links[(a, a + 1)] = probe_link(self.comm, a, a + 1, probe_bytes)
        except BaseException:
            self.close()
            raise
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
        return [p.pid for p in self._procs]

    @property
    def failed(self) -> str | None:
        return self._failure

    def _await(self, rank: int, kind: type, timeout_s: float):
        conn, proc = self._conns[rank - 1], self._procs[rank - 1]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if conn.poll(0.1):
                msg = conn.recv()
                if isinstance(msg, Failed):
                    raise WorkerFailure(f"worker {rank} failed to start: {msg.error}")
                if not isinstance(msg, kind):
                    raise WorkerFailure(f"worker {rank} sent {type(msg).__name__} while starting")
                return msg
            if not proc.is_alive():
                raise WorkerFailure(f"worker {rank} exited with code {proc.exitcode} while starting")
        raise WorkerFailure(f"worker {rank} did not start within {timeout_s:.0f} s")

    def _broadcast(self, msg) -> None:
        for r, conn in enumerate(self._conns, start=1):
            try:
                conn.send(msg)
            except (OSError, EOFError) as e:
                raise self._fail(f"lost the control pipe of worker {r} ({e})") from None

    def _fail(self, what: str) -> WorkerFailure:
        """Record the first failure with whatever the workers said, and return it to raise."""
        if self._failure is None:
            notes = []
            for r, (conn, proc) in enumerate(zip(self._conns, self._procs, strict=True), start=1):
                lo, hi = self.stage.ranges[r] if hasattr(self, "stage") else (0, 0)
                said = ""
                try:
                    while conn.poll(0):
                        m = conn.recv()
                        if isinstance(m, Failed):
                            said = f": {m.error}"
                except (OSError, EOFError):
                    pass
                proc.join(0.5 if not proc.is_alive() else 0)
                if proc.exitcode is not None or said:
                    notes.append(f"worker {r} (layers [{lo}, {hi})) exited with code {proc.exitcode}{said}")
            detail = "; ".join(notes) or what
            self._failure = (f"multi-worker instance failed: {detail}; restart the server "
                             f"(first error: {what})" if notes else f"multi-worker instance failed: {what}")
            log.error("%s", self._failure)
        return WorkerFailure(self._failure)

    def _check_alive(self) -> None:
        if self._failure is not None:
            raise WorkerFailure(self._failure)
        if self._closed:
            raise WorkerFailure("the multi-worker instance is shut down")
        if any(p.exitcode is not None for p in self._procs):
            raise self._fail("a worker process exited")

    # ------------------------------------------------------------------ the Executor protocol
    def execute(self, batch: ScheduledBatch) -> StepResult:
        if not batch.items:
            return StepResult(duration_s=0.0, next_tokens={})
        with self._lock:
            self._check_alive()
            self._run_pending()
            self._maybe_control()
            self._check_alive()  # a migration may have found a dead worker
            t0 = time.perf_counter()
            work = [seq_work(it) for it in batch.items]
            samplers = [sampler_of(it) for it in batch.items]
            inputs = build_step_inputs(work, self.block_size, self.device)
            self._broadcast(StepMsg(work))
            try:
                logits, times = self.stage.forward(self.comm, inputs)
            except WorkerFailure:
                raise
            except Exception as e:  # a collective failed: a peer died or timed out
                first = str(e).splitlines()[0][:300] if str(e) else ""
                raise self._fail(f"step {self.steps}: {type(e).__name__}: {first}") from e
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

    # ------------------------------------------------------------------ migration
    def check_move(self, layers: Sequence[int], src: int, dst: int) -> None:
        """Raise LlmplanError if the move is invalid for the current stage map."""
        apply_move(self.ranges, tuple(layers), src, dst)

    def migrate(self, layers: Sequence[int], src: int, dst: int, trigger: str = "admin",
                timeout_s: float | None = None) -> MigrationRecord:
        """Move ``layers`` (weights and KV in use) from worker ``src`` to ``dst`` between two steps.
        Offloaded heads of a moved layer come back to it first."""
        self.check_move(layers, src, dst)
        return self._between_steps(lambda: self._migrate_locked(tuple(layers), src, dst, trigger),
                                   f"migration of layers {list(layers)}", timeout_s)

    def offload_attention(self, layers: Sequence[int], src: int, dst: int, kv_heads: int,
                          trigger: str = "admin", timeout_s: float | None = None) -> OffloadRecord:
        """Attention migration: the last ``kv_heads`` KV heads of each of ``layers`` (held by
        worker ``src``), with their query groups and KV in use, to worker ``dst``."""
        self._check_offload(tuple(layers), src, dst, kv_heads)
        return self._between_steps(lambda: self._offload_locked(tuple(layers), src, dst, kv_heads, trigger),
                                   f"attention offload of layers {list(layers)}", timeout_s)

    def restore_attention(self, layers: Sequence[int] | None = None, trigger: str = "admin",
                          timeout_s: float | None = None) -> list[int]:
        """Take offloaded heads back to their layers' owners (all offloads when ``layers`` is None);
        returns the layers restored."""
        return self._between_steps(lambda: self._restore_locked(layers, trigger),
                                   "attention restore", timeout_s)

    @property
    def offloads(self) -> dict[int, HeadOffload]:
        return dict(self.stage.offloads)

    def _between_steps(self, fn: Callable[[], Any], what: str, timeout_s: float | None) -> Any:
        """Run ``fn`` under the step lock: queued for the engine thread, which runs it before its
        next step; when the engine is idle the caller runs it itself."""
        self._check_alive()
        p = _Pending(fn)
        with self._pending_lock:
            self._pending.append(p)
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while not p.done.wait(0.05):
            if self._lock.acquire(blocking=False):
                try:
                    self._run_pending()
                finally:
                    self._lock.release()
            if time.monotonic() > deadline:
                raise WorkerFailure(f"{what} did not run within the timeout")
        if p.error is not None:
            raise p.error
        return p.result

    def _run_pending(self) -> None:
        with self._pending_lock:
            todo, self._pending = self._pending, []
        for p in todo:
            try:
                p.result = p.run()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                p.error = e
            finally:
                p.done.set()

    def _comm_error(self, what: str, e: Exception) -> WorkerFailure:
        first = str(e).splitlines()[0][:300] if str(e) else ""
        return self._fail(f"{what}: {type(e).__name__}: {first}")

    def _migrate_locked(self, layers: tuple[int, ...], src: int, dst: int, trigger: str) -> MigrationRecord:
        self._check_alive()
        apply_move(self.ranges, layers, src, dst)  # still valid now (the map may have changed)
        self._restore_locked([i for i in layers if i in self.stage.offloads], trigger)
        # Blocks of running sequences; one allocated after this read holds no KV yet (KV is only
        # written inside a step, and steps wait for this lock), one freed since travels for nothing.
        blocks = sorted(set(self.blocks_in_use()))
        self._broadcast(MigrateMsg(layers, src, dst, blocks))
        try:
            measured = self.stage.migrate(self.comm, layers, src, dst, blocks)
        except Exception as e:
            raise self._comm_error(f"migration {list(layers)} {src}->{dst}", e) from e
        nbytes = self.stage.migration_bytes(len(layers), len(blocks))
        bw, sync = self._link(src, dst)
        rec = MigrationRecord(self.steps, layers, src, dst, nbytes, measured, nbytes / bw + sync, bw, sync,
                              trigger)
        self.records.append(rec)
        self._by_trigger[trigger] += 1
        log.info("layer migration (%s) %s: worker %d -> %d, %d KV blocks, %.2f MB in %.4f s "
                 "(estimate S/B + T_sync = %.4f s); layers now %s", trigger, list(layers), src, dst,
                 len(blocks), nbytes / 1e6, measured, rec.estimate_s, self.ranges)
        return rec

    def _check_offload(self, layers: tuple[int, ...], src: int, dst: int, kv_heads: int) -> None:
        ranges = self.ranges
        for r, name in ((src, "src"), (dst, "dst")):
            if not 0 <= r < self.world:
                raise LlmplanError(f"worker {name}={r} does not exist (workers 0..{self.world - 1})")
        if src == dst:
            raise LlmplanError("src and dst must be different workers")
        check_offload(self.cfg.num_kv_heads, kv_heads)
        if not layers:
            raise LlmplanError("name at least one layer to offload")
        lo, hi = ranges[src]
        for i in layers:
            if not lo <= i < hi:
                raise LlmplanError(f"layer {i} is not on worker {src}, which holds layers [{lo}, {hi})")
            if i in self.stage.offloads:
                o = self.stage.offloads[i]
                raise LlmplanError(f"layer {i} already has {o.kv_heads} KV head(s) on worker {o.host}; "
                                   f"restore it first")

    def _offload_locked(self, layers: tuple[int, ...], src: int, dst: int, kv_heads: int,
                        trigger: str) -> OffloadRecord:
        self._check_alive()
        self._check_offload(layers, src, dst, kv_heads)  # still valid now (the map may have changed)
        blocks = sorted(set(self.blocks_in_use()))
        measured = 0.0
        for i in layers:
            off = HeadOffload(i, src, dst, kv_heads)
            self._broadcast(OffloadMsg(off, blocks))
            try:
                measured += self.stage.offload(self.comm, off, blocks)
            except Exception as e:
                raise self._comm_error(f"attention offload of layer {i} {src}->{dst}", e) from e
        nbytes = len(layers) * self.stage.offload_bytes(kv_heads, len(blocks))
        bw, sync = self._link(src, dst)
        rec = OffloadRecord(self.steps, layers, src, dst, kv_heads, nbytes, measured,
                            nbytes / bw + len(layers) * sync, trigger)
        self.offload_records.append(rec)
        self._offloads[trigger] += 1
        log.info("attention offload (%s) layers %s: %d of %d KV heads worker %d -> %d, %d KV blocks, "
                 "%.2f MB in %.4f s (estimate S/B + T_sync = %.4f s)", trigger, list(layers), kv_heads,
                 self.cfg.num_kv_heads, src, dst, len(blocks), nbytes / 1e6, measured, rec.estimate_s)
        return rec

    def _restore_locked(self, layers: Iterable[int] | None, trigger: str) -> list[int]:
        todo = sorted(self.stage.offloads if layers is None else set(layers) & set(self.stage.offloads))
        if todo:
            self._check_alive()
            self._broadcast(RestoreMsg(tuple(todo)))
            self.stage.restore(todo)
            self._restores[trigger] += len(todo)
            log.info("attention restore (%s): layers %s compute all their heads on their own workers again",
                     trigger, todo)
        return todo

    def _link(self, a: int, b: int) -> tuple[float, float]:
        """(bytes/s, T_sync) between two workers: the probed link, or for workers that are not
        neighbours the slowest probed link between them (a conservative stand-in)."""
        lo, hi = sorted((a, b))
        hops = [self.links[(r, r + 1)] for r in range(lo, hi)]
        return min(bw for bw, _ in hops), max(s for _, s in hops)

    # ------------------------------------------------------------------ load and control
    def enable_controller(self, controller, interval_s: float) -> None:
        if interval_s <= 0:
            raise LlmplanError(f"--control-interval must be > 0 s (got {interval_s})")
        self.controller = controller
        self.control_interval_s = interval_s

    def bandwidth(self, a, b) -> tuple[float, float]:
        """The controller's BandwidthFn: the probed link between two workers (latency in sync_s)."""
        bw, _ = self._link(int(a.name[1:]), int(b.name[1:]))
        return bw, 0.0

    def loads(self):
        """One WorkerLoad per worker over the window since the last call (which it closes):
        compute = the stage's busy share of the step time (attention served for other workers
        included, waits for its own offloaded heads excluded); memory = held weights + KV in use
        (+ the offloaded heads' pools a worker hosts)."""
        from llmplan.migrate.controller import WorkerLoad

        wall = self._wall
        share = [b / wall if wall > 0 else 0.0 for b in self._busy]
        self._busy, self._wall = [0.0] * self.world, 0.0
        used = len(set(self.blocks_in_use()))
        extra = self.stage.weight_bytes() - len(self.stage.layers) * self.stage.layer_weight_bytes
        hosted = [0.0] * self.world
        for off in self.stage.offloads.values():
            hosted[off.host] += used * self.stage.kv_block_bytes() * off.kv_heads / self.cfg.num_kv_heads
        out = []
        for r, (lo, hi) in enumerate(self.ranges):
            n = hi - lo
            held = n * self.stage.layer_weight_bytes + (extra if r == 0 else 0)
            kv = used * self.stage.kv_block_bytes() * n + hosted[r]
            out.append(WorkerLoad(f"w{r}", share[r], float(held + kv), self.capacity_bytes, layers=(lo, hi),
                                  layer_weight_bytes=float(self.stage.layer_weight_bytes),
                                  kv_bytes=float(kv)))
        return out

    def _maybe_control(self) -> None:
        if self.controller is None:
            return
        now = time.monotonic() - self._t0
        if now - self._last_control < self.control_interval_s:
            return
        self._last_control = now
        loads = self.loads()
        # The controller names workers (WorkerLoad.name is a str shared with the simulator's
        # instances); map its names back to ranks rather than parsing them.
        rank = {w.name: r for r, w in enumerate(loads)}
        for d in self.controller.step(now, loads):
            src, dst = rank[d.src], rank[d.dst]
            try:
                if d.kind == "layer":
                    rec = self._migrate_locked(tuple(d.layers), src, dst, "controller")
                    measured, priced = rec.measured_s, True
                else:
                    measured, priced = self._apply_attention(src, dst, d.kv_fraction)
            except WorkerFailure:
                raise
            except LlmplanError as e:
                self._not_applied[d.kind] += 1
                log.warning("migration decision %s %s->%s not applied: %s", d.kind, d.src, d.dst, e)
                continue
            self.controller.record_result(d, measured, calibrate=priced)

    def _apply_attention(self, src: int, dst: int, fraction: float) -> tuple[float, bool]:
        """Relieve ``src`` towards ``dst`` by a ``fraction`` of its attention: first take back the
        heads ``src`` hosts for ``dst`` (free: no transfer), else offload the last
        ``round(fraction * KV heads)`` heads (at least 1) of each of its layers not offloaded yet.
        Returns the measured seconds and whether the move was the offload the controller priced."""
        back = [i for i, o in self.stage.offloads.items() if o.owner == dst and o.host == src]
        if back:
            t0 = time.perf_counter()
            self._restore_locked(back, "controller")
            return time.perf_counter() - t0, False
        nkv = self.cfg.num_kv_heads
        heads = min(nkv - 1, max(1, round(fraction * nkv)))
        lo, hi = self.ranges[src]
        layers = tuple(i for i in range(lo, hi) if i not in self.stage.offloads)
        if not layers:
            raise LlmplanError(f"every layer of worker {src} is offloaded already")
        return self._offload_locked(layers, src, dst, heads, "controller").measured_s, True

    # ------------------------------------------------------------------ metrics
    def stats(self) -> PipelineStats:
        recs = list(self.records)
        return PipelineStats(
            ranges=self.ranges,
            busy_s_total=list(self._busy_total),
            step_s_total=self._wall_total,
            migrations=Counter(self._by_trigger),
            last=recs[-1] if recs else None,
            measured_s_total=sum(r.measured_s for r in recs),
            estimate_s_total=sum(r.estimate_s for r in recs),
            bytes_total=sum(r.bytes for r in recs),
            not_applied=Counter(self._not_applied),
            steps=self.steps,
            offloads=Counter(self._offloads),
            restores=Counter(self._restores),
            offload_measured_s_total=sum(r.measured_s for r in self.offload_records),
            offload_estimate_s_total=sum(r.estimate_s for r in self.offload_records),
            offload_bytes_total=sum(r.bytes for r in self.offload_records),
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
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send(StopMsg())
            except (OSError, EOFError, ValueError):
                pass
        deadline = time.monotonic() + timeout_s
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker %s did not stop; killing it", p.name)
                p.kill()
                p.join(5)
        for conn in self._conns:
            conn.close()
        if hasattr(self, "comm"):
            self.comm.close()
        atexit.unregister(self.close)

