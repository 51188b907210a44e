"""The worker processes of a multi-worker instance: ranks 1..N-1, their control pipes, failure.

:class:`WorkerPool` spawns the ranks (``spawn`` multiprocessing context), waits for each one's
start-up messages, sends control messages to all of them, turns a dead or silent worker into one
:class:`WorkerFailure` that names what every worker said, and stops them. It knows nothing of
steps or migrations; the :class:`~llmplan.runtime.workers.executor.PipelineExecutor` drives it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from llmplan.errors import LlmplanError
from llmplan.runtime.workers.protocol import Failed, StopMsg
from llmplan.runtime.workers.stage import StageSource
from llmplan.runtime.workers.stages import Ranges
from llmplan.runtime.workers.worker import worker_main

log = logging.getLogger(__name__)


class WorkerFailure(LlmplanError):
    """A worker of the instance died or stopped answering; the instance cannot serve."""


class WorkerPool:
    """Ranks 1..``world``-1 as daemon processes, each with its control pipe."""

    def __init__(self, source: StageSource, ranges: Sequence[tuple[int, int]], port: int,
                 timeout_s: float, threads: int) -> None:
        import torch.multiprocessing as mp

        self.world = len(ranges)
        self.failure: str | None = None  # the first failure, once there is one
        self.closed = False
        # The stage map for failure messages; set by the executor once rank 0's stage exists.
        self.stage_ranges: Callable[[], Ranges] | None = None
        mp_ctx = mp.get_context("spawn")
        self._conns = []
        self._procs = []
        for r in range(1, self.world):
            parent, child = mp_ctx.Pipe()
            p = mp_ctx.Process(
                target=worker_main,
                args=(r, self.world, port, source, list(ranges), child, timeout_s, threads),
                name=f"llmplan-worker-{r}",
                daemon=True,
            )
            p.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(p)

    @property
    def pids(self) -> list[int]:
        """Process ids of ranks 1..N-1."""
        return [p.pid for p in self._procs]

    def await_msg(self, rank: int, kind: type, timeout_s: float):
        """The next message of worker ``rank``, which must be a ``kind`` (its start-up handshake)."""
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

    def broadcast(self, msg) -> None:
        for r, conn in enumerate(self._conns, start=1):
            try:
                conn.send(msg)
            except (OSError, EOFError) as e:
                raise self.fail(f"lost the control pipe of worker {r} ({e})") from None

    def fail(self, what: str) -> WorkerFailure:
        """Record the first failure with whatever the workers said, and return it to raise."""
        if self.failure is None:
            notes = []
            for r, (conn, proc) in enumerate(zip(self._conns, self._procs, strict=True), start=1):
                lo, hi = self.stage_ranges()[r] if self.stage_ranges is not None else (0, 0)
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
            self.failure = (f"multi-worker instance failed: {detail}; restart the server "
                            f"(first error: {what})" if notes else f"multi-worker instance failed: {what}")
            log.error("%s", self.failure)
        return WorkerFailure(self.failure)

    def comm_error(self, what: str, e: Exception) -> WorkerFailure:
        """:meth:`fail` for a collective that raised (a peer died or timed out)."""
        first = str(e).splitlines()[0][:300] if str(e) else ""
        return self.fail(f"{what}: {type(e).__name__}: {first}")

    def check_alive(self) -> None:
        if self.failure is not None:
            raise WorkerFailure(self.failure)
        if self.closed:
            raise WorkerFailure("the multi-worker instance is shut down")
        if any(p.exitcode is not None for p in self._procs):
            raise self.fail("a worker process exited")

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the workers; kills any that do not exit within ``timeout_s``. Returns False when
        the pool was closed already (idempotent)."""
        if self.closed:
            return False
        self.closed = True
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
        return True

