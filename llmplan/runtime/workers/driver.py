"""Rank 0 of a multi-worker instance: the :class:`PipelineExecutor`, the core's ``Executor``.

The serving core (Scheduler, BlockManager, batch policy, LLMEngine) is unchanged: it hands each
:class:`~llmplan.runtime.core.types.ScheduledBatch` to this executor as it would to the
single-process :class:`~llmplan.runtime.engine.executor.TorchExecutor`. Here the batch's work is
sent to every worker over its control pipe, the hidden state runs through the stages over the
instance's process group, and rank 0 samples with each request's own sampler.

Between two steps the executor can move boundary layers from one worker to its neighbour
(:meth:`PipelineExecutor.migrate`, thread-safe, for the admin endpoint) and runs the
:class:`~llmplan.migrate.controller.MigrationController` every ``control_interval_s`` over live
:class:`~llmplan.migrate.controller.WorkerLoad`\\ s. Every step and migration is bounded by the
process group's timeout; a dead worker turns into one clear :class:`WorkerFailure` (and every
later step fails fast with it), which the engine loop reports to the requests in flight.
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
from llmplan.runtime.workers.protocol import Failed, Hello, MigrateMsg, ProbeMsg, Ready, StepMsg, StopMsg
from llmplan.runtime.workers.stage import StageSource, StageWorker, worker_device
from llmplan.runtime.workers.stages import MigrationRecord, Ranges, apply_move, validate_ranges
from llmplan.runtime.workers.worker import worker_main

log = logging.getLogger(__name__)


class WorkerFailure(LlmplanError):
    """A worker of the instance died or stopped answering; the instance cannot serve."""


@dataclass(slots=True)
class _Pending:
    layers: tuple[int, ...]
    src: int
    dst: int
    trigger: str
    done: threading.Event = field(default_factory=threading.Event)
    record: MigrationRecord | None = None
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
            nxt = {batch.items[i].seq.rid: t for i, t in zip(inputs.order, tokens, strict=True)}
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

        Thread-safe: queued for the engine thread, which runs it before its next step; when the
        engine is idle the caller runs it itself under the step lock.
        """
        self.check_move(layers, src, dst)
        self._check_alive()
        p = _Pending(tuple(layers), src, dst, trigger)
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
                raise WorkerFailure(f"migration of layers {list(layers)} did not run within the timeout")
        if p.error is not None:
            raise p.error
        assert p.record is not None
        return p.record

    def _run_pending(self) -> None:
        with self._pending_lock:
            todo, self._pending = self._pending, []
        for p in todo:
            try:
                p.record = self._migrate_locked(p.layers, p.src, p.dst, p.trigger)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                p.error = e
            finally:
                p.done.set()

    def _migrate_locked(self, layers: tuple[int, ...], src: int, dst: int, trigger: str) -> MigrationRecord:
        self._check_alive()
        apply_move(self.ranges, layers, src, dst)  # still valid now (the map may have changed)
        # Blocks of running sequences; one allocated after this read holds no KV yet (KV is only
        # written inside a step, and steps wait for this lock), one freed since travels for nothing.
        blocks = sorted(set(self.blocks_in_use()))
        self._broadcast(MigrateMsg(layers, src, dst, blocks))
        try:
            measured = self.stage.migrate(self.comm, layers, src, dst, blocks)
        except Exception as e:
            first = str(e).splitlines()[0][:300] if str(e) else ""
            raise self._fail(f"migration {list(layers)} {src}->{dst}: {type(e).__name__}: {first}") from e
        nbytes = self.stage.migration_bytes(len(layers), len(blocks))
        bw, sync = self.links[(min(src, dst), max(src, dst))]
        rec = MigrationRecord(self.steps, layers, src, dst, nbytes, measured, nbytes / bw + sync, bw, sync,
                              trigger)
        self.records.append(rec)
        self._by_trigger[trigger] += 1
        log.info("layer migration (%s) %s: worker %d -> %d, %d KV blocks, %.2f MB in %.4f s "
                 "(estimate S/B + T_sync = %.4f s); layers now %s", trigger, list(layers), src, dst,
                 len(blocks), nbytes / 1e6, measured, rec.estimate_s, self.ranges)
        return rec

    # ------------------------------------------------------------------ load and control
    def enable_controller(self, controller, interval_s: float) -> None:
        if interval_s <= 0:
            raise LlmplanError(f"--control-interval must be > 0 s (got {interval_s})")
        self.controller = controller
        self.control_interval_s = interval_s

    def bandwidth(self, a, b) -> tuple[float, float]:
        """The controller's BandwidthFn: the probed link between two workers (latency in sync_s)."""
        ra, rb = sorted((int(a.name[1:]), int(b.name[1:])))
        bw, _ = self.links.get((ra, rb), self.links[(0, 1)])
        return bw, 0.0

    def loads(self):
        """One WorkerLoad per worker over the window since the last call (which it closes):
        compute = the stage's busy share of the step time; memory = held weights + KV in use."""
        from llmplan.migrate.controller import WorkerLoad

        wall = self._wall
        share = [b / wall if wall > 0 else 0.0 for b in self._busy]
        self._busy, self._wall = [0.0] * self.world, 0.0
        used = len(set(self.blocks_in_use()))
        extra = self.stage.weight_bytes() - len(self.stage.layers) * self.stage.layer_weight_bytes
        out = []
        for r, (lo, hi) in enumerate(self.ranges):
            n = hi - lo
            held = n * self.stage.layer_weight_bytes + (extra if r == 0 else 0)
            kv = used * self.stage.kv_block_bytes() * n
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
        for d in self.controller.step(now, self.loads()):
            src, dst = int(d.src[1:]), int(d.dst[1:])
            if d.kind != "layer":
                self._not_applied[d.kind] += 1
                log.info("migration decision %s %s->%s not applied: attention offload is not wired into "
                         "the multi-worker executor (%s)", d.kind, d.src, d.dst, d.reason)
                continue
            try:
                rec = self._migrate_locked(tuple(d.layers), src, dst, "controller")
            except WorkerFailure:
                raise
            except LlmplanError as e:
                self._not_applied[d.kind] += 1
                log.warning("migration decision %s not applied: %s", d.layers, e)
                continue
            self.controller.record_result(d, rec.measured_s)

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

