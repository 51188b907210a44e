"""Moving work between the workers of a live instance, between two steps.

* :class:`BetweenSteps` -- the cross-thread queue: an admin thread hands a migration to the engine
  thread, which runs it under the step lock before its next step (or the caller runs it itself
  when the engine is idle), so a migration never overlaps a step;
* :class:`Migrator` -- what runs there: layer moves (weights and the KV blocks in use) between
  workers, attention offloads (the last KV heads of layers, with their KV, to another worker) and
  restores, each timed beside its estimate ``S/B + T_sync`` over the probed links and recorded.

Every method of :class:`Migrator` expects the step lock to be held.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.runtime.workers.comm import Comm
from llmplan.runtime.workers.offload import HeadOffload, check_offload
from llmplan.runtime.workers.pool import WorkerFailure, WorkerPool
from llmplan.runtime.workers.protocol import MigrateMsg, OffloadMsg, RestoreMsg
from llmplan.runtime.workers.stage import StageWorker
from llmplan.runtime.workers.stages import MigrationRecord, OffloadRecord, Ranges, apply_move

log = logging.getLogger(__name__)

Links = dict[tuple[int, int], tuple[float, float]]  # (rank, rank + 1) -> (bytes/s, T_sync s)


@dataclass(slots=True)
class _Pending:
    run: Callable[[], Any]  # called by whichever thread holds the step lock
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


class BetweenSteps:
    """Work queued for the holder of the step lock ``lock``."""

    def __init__(self, lock: threading.Lock, timeout_s: float, check_alive: Callable[[], None]) -> None:
        self._lock = lock
        self._timeout_s = timeout_s
        self._check_alive = check_alive
        self._pending: list[_Pending] = []
        self._pending_lock = threading.Lock()

    def run(self, fn: Callable[[], Any], what: str, timeout_s: float | None) -> Any:
        """Run ``fn`` under the step lock: queued for the engine thread, which runs it before its
        next step; when the engine is idle the caller runs it itself."""
        self._check_alive()
        p = _Pending(fn)
        with self._pending_lock:
            self._pending.append(p)
        deadline = time.monotonic() + (timeout_s or self._timeout_s)
        while not p.done.wait(0.05):
            if self._lock.acquire(blocking=False):
                try:
                    self.drain()
                finally:
                    self._lock.release()
            if time.monotonic() > deadline:
                raise WorkerFailure(f"{what} did not run within the timeout")
        if p.error is not None:
            raise p.error
        return p.result

    def drain(self) -> None:
        """Run everything queued (the caller holds the step lock)."""
        with self._pending_lock:
            todo, self._pending = self._pending, []
        for p in todo:
            try:
                p.result = p.run()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                p.error = e
            finally:
                p.done.set()


class Migrator:
    """Layer migrations, attention offloads and restores over ``pool``'s workers and rank 0's
    ``stage``; counts them by trigger and keeps their records."""

    def __init__(self, pool: WorkerPool, stage: StageWorker, comm: Comm, num_kv_heads: int, links: Links,
                 blocks_in_use: Callable[[], Iterable[int]], step: Callable[[], int]) -> None:
        self.pool = pool
        self.stage = stage
        self.comm = comm
        self.num_kv_heads = num_kv_heads
        self.links = links
        self.blocks_in_use = blocks_in_use
        self._step = step  # the executor's step count, stamped on each record
        self.records: list[MigrationRecord] = []
        self.by_trigger: Counter = Counter()
        self.offload_records: list[OffloadRecord] = []
        self.offloads_by_trigger: Counter = Counter()
        self.restores_by_trigger: Counter = Counter()

    @property
    def ranges(self) -> Ranges:
        return list(self.stage.ranges)

    def link(self, a: int, b: int) -> tuple[float, float]:
        """(bytes/s, T_sync) between two workers: the probed link, or for workers that are not
        neighbours the slowest probed link between them (a conservative stand-in)."""
        lo, hi = sorted((a, b))
        hops = [self.links[(r, r + 1)] for r in range(lo, hi)]
        return min(bw for bw, _ in hops), max(s for _, s in hops)

    # ------------------------------------------------------------------ layers
    def migrate(self, layers: tuple[int, ...], src: int, dst: int, trigger: str) -> MigrationRecord:
        self.pool.check_alive()
        apply_move(self.ranges, layers, src, dst)  # still valid now (the map may have changed)
        self.restore([i for i in layers if i in self.stage.offloads], trigger)
        # Blocks of running sequences; one allocated after this read holds no KV yet (KV is only
        # written inside a step, and steps wait for this lock), one freed since travels for nothing.
        blocks = sorted(set(self.blocks_in_use()))
        self.pool.broadcast(MigrateMsg(layers, src, dst, blocks))
        try:
            measured = self.stage.migrate(self.comm, layers, src, dst, blocks)
        except Exception as e:
            raise self.pool.comm_error(f"migration {list(layers)} {src}->{dst}", e) from e
        nbytes = self.stage.migration_bytes(len(layers), len(blocks))
        bw, sync = self.link(src, dst)
        rec = MigrationRecord(self._step(), layers, src, dst, nbytes, measured, nbytes / bw + sync, bw, sync,
                              trigger)
        self.records.append(rec)
        self.by_trigger[trigger] += 1
        log.info("layer migration (%s) %s: worker %d -> %d, %d KV blocks, %.2f MB in %.4f s "
                 "(estimate S/B + T_sync = %.4f s); layers now %s", trigger, list(layers), src, dst,
                 len(blocks), nbytes / 1e6, measured, rec.estimate_s, self.ranges)
        return rec

    # ------------------------------------------------------------------ attention heads
    def check_offload(self, layers: tuple[int, ...], src: int, dst: int, kv_heads: int) -> None:
        """Raise LlmplanError if the offload is invalid for the current stage map."""
        ranges, world = self.ranges, len(self.stage.ranges)
        for r, name in ((src, "src"), (dst, "dst")):
            if not 0 <= r < world:
                raise LlmplanError(f"worker {name}={r} does not exist (workers 0..{world - 1})")
        if src == dst:
            raise LlmplanError("src and dst must be different workers")
        check_offload(self.num_kv_heads, kv_heads)
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

    def offload(self, layers: tuple[int, ...], src: int, dst: int, kv_heads: int,
                trigger: str) -> OffloadRecord:
        self.pool.check_alive()
        self.check_offload(layers, src, dst, kv_heads)  # still valid now (the map may have changed)
        blocks = sorted(set(self.blocks_in_use()))
        measured = 0.0
        for i in layers:
            off = HeadOffload(i, src, dst, kv_heads)
            self.pool.broadcast(OffloadMsg(off, blocks))
            try:
                measured += self.stage.offload(self.comm, off, blocks)
            except Exception as e:
                raise self.pool.comm_error(f"attention offload of layer {i} {src}->{dst}", e) from e
        nbytes = len(layers) * self.stage.offload_bytes(kv_heads, len(blocks))
        bw, sync = self.link(src, dst)
        rec = OffloadRecord(self._step(), layers, src, dst, kv_heads, nbytes, measured,
                            nbytes / bw + len(layers) * sync, trigger)
        self.offload_records.append(rec)
        self.offloads_by_trigger[trigger] += 1
        log.info("attention offload (%s) layers %s: %d of %d KV heads worker %d -> %d, %d KV blocks, "
                 "%.2f MB in %.4f s (estimate S/B + T_sync = %.4f s)", trigger, list(layers), kv_heads,
                 self.num_kv_heads, src, dst, len(blocks), nbytes / 1e6, measured, rec.estimate_s)
        return rec

    def restore(self, layers: Iterable[int] | None, trigger: str) -> list[int]:
        """Offloaded heads of ``layers`` (all when None) back to their owners; the layers restored."""
        todo = sorted(self.stage.offloads if layers is None else set(layers) & set(self.stage.offloads))
        if todo:
            self.pool.check_alive()
            self.pool.broadcast(RestoreMsg(tuple(todo)))
            self.stage.restore(todo)
            self.restores_by_trigger[trigger] += len(todo)
            log.info("attention restore (%s): layers %s compute all their heads on their own workers again",
                     trigger, todo)
        return todo

    def relieve_attention(self, src: int, dst: int, fraction: float, trigger: str) -> tuple[float, bool]:
        """Relieve ``src`` towards ``dst`` by a ``fraction`` of its attention: first take back the
        heads ``src`` hosts for ``dst`` (free: no transfer), else offload the last
        ``round(fraction * KV heads)`` heads (at least 1) of each of its layers not offloaded yet.
        Returns the measured seconds and whether the move was the offload the controller priced."""
        back = [i for i, o in self.stage.offloads.items() if o.owner == dst and o.host == src]
        if back:
            t0 = time.perf_counter()
            self.restore(back, trigger)
            return time.perf_counter() - t0, False
        nkv = self.num_kv_heads
        heads = min(nkv - 1, max(1, round(fraction * nkv)))
        lo, hi = self.ranges[src]
        layers = tuple(i for i in range(lo, hi) if i not in self.stage.offloads)
        if not layers:
            raise LlmplanError(f"every layer of worker {src} is offloaded already")
        return self.offload(layers, src, dst, heads, trigger).measured_s, True
