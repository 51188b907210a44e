"""The asyncio face of the engine: a background thread runs the step loop.

Requests and aborts cross into the engine thread through a locked inbox; outputs cross back
with ``loop.call_soon_threadsafe`` into one ``asyncio.Queue`` per request. The step itself
(a torch forward pass) releases the GIL, so the event loop keeps serving HTTP meanwhile.

``generate()`` is a plain method, not an async generator, so it can refuse a request
(``QueueFullError``, ``InvalidRequestError``) at call time, before any stream exists.
A stream that its consumer stops reading (client disconnect closes the generator) aborts
its request and frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

import torch

from llmplan.runtime.engine.api import (
    EngineClosedError,
    EngineStats,
    GenerateOutput,
    GenerateRequest,
    QueueFullError,
)
from llmplan.runtime.engine.llm_engine import LLMEngine

log = logging.getLogger(__name__)


class AsyncLLMEngine:
    """Implements :class:`llmplan.runtime.engine.api.AsyncEngine` over an :class:`LLMEngine`."""

    def __init__(self, engine: LLMEngine, max_queue: int = 1024, model_name: str | None = None) -> None:
        self.engine = engine
        self.model_name = model_name or engine.model_name
        self.max_model_len = engine.max_model_len
        self.tokenizer = engine.tokenizer
        self.vocab_size = engine.cfg.vocab_size
        self.max_queue = max_queue
        self._cv = threading.Condition()
        self._inbox: list[tuple[str, object]] = []
        self._pending = 0  # accepted, not yet handed to the scheduler
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._drain = True
        self._closed = False
        self._started = False
        self._live: set[str] = set()  # request ids with an open stream
        # Outputs of the current step, handed to the event loop(s) in one call per step (a call
        # per output wakes the loop and takes the GIL from the engine thread once per request).
        self._outbox: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[GenerateOutput], GenerateOutput]]
        self._outbox = []
        self.loop_error: BaseException | None = None
        # torch intra-op threads of the engine thread (set by the factory); None: torch's default
        self.threads: int | None = None
        # CPUs the engine thread's intra-op threads are pinned to, one each (set by the factory)
        self.cpu_bind: tuple[int, ...] | None = None

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._thread = threading.Thread(target=self._run, name="llmplan-engine", daemon=True)
        self._thread.start()

    async def shutdown(self, drain: bool = True) -> None:
        with self._cv:
            self._closed = True
            self._stopping = True
            self._drain = drain
            self._cv.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # ----------------------------------------------------------------- requests
    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateOutput]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerateOutput] = asyncio.Queue()
        self.engine.validate(request)  # raises InvalidRequestError
        with self._cv:
            if self._closed:
                raise EngineClosedError("the engine is shutting down and accepts no new requests")
            if request.request_id in self._live:
                raise ValueError(f"request_id {request.request_id!r} is already in flight")
            waiting = self._pending + self.engine.num_waiting()
            if waiting >= self.max_queue:
                raise QueueFullError(retry_after_s=self._retry_after(waiting))
            if not self._started:
                raise EngineClosedError("the engine is not started; await engine.start() first")

            def sink(out: GenerateOutput) -> None:  # on the engine thread; see _flush
                self._outbox.append((loop, queue, out))

            self._live.add(request.request_id)
            self._pending += 1
            self._inbox.append(("add", (request, sink)))
            self._cv.notify()
        return self._stream(request.request_id, queue)

    async def _stream(
        self, request_id: str, queue: asyncio.Queue[GenerateOutput]
    ) -> AsyncIterator[GenerateOutput]:
        finished = False
        try:
            while True:
                out = await queue.get()
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            with self._cv:
                self._live.discard(request_id)
            if not finished:
                self._post_abort(request_id)

    async def abort(self, request_id: str) -> None:
        self._post_abort(request_id)

    def _post_abort(self, request_id: str) -> None:
        with self._cv:
            self._inbox.append(("abort", request_id))
            self._cv.notify()

    def stats(self) -> EngineStats:
        s = self.engine.stats()
        s.waiting += self._pending
        return s

    def _retry_after(self, waiting: int) -> float:
        # Roughly the time to drain the queue ahead at the recent finish rate.
        rate = self.engine.recent_finish_rate()
        return max(1.0, min(60.0, waiting / rate)) if rate > 0 else 1.0

    # ----------------------------------------------------------------- engine thread
    def _take_inbox(self) -> list[tuple[str, object]]:
        with self._cv:
            while not self._inbox and not self._stopping and not self.engine.has_work():
                self._cv.wait()
            items, self._inbox = self._inbox, []
            self._pending -= sum(1 for kind, _ in items if kind == "add")
            return items

    def _flush(self) -> None:
        """Hand the outputs gathered on the engine thread to their event loops, one call each."""
        if not self._outbox:
            return
        items, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for loop, queue, out in items:
            by_loop.setdefault(loop, []).append((queue, out))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, batch)
            except RuntimeError:  # that loop is closed: nobody is reading these streams
                log.debug("dropped %d outputs for a closed event loop", len(batch))

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._flush()

    def _loop(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)  # this thread's intra-op threads (see the factory)
        if self.cpu_bind:
            from llmplan.runtime.engine.native import bind_threads

            log.info("engine thread: %s", bind_threads(self.cpu_bind))
        eng = self.engine
        while True:
            self._flush()
            for kind, payload in self._take_inbox():
                if kind == "add":
                    request, sink = payload  # type: ignore[misc]
                    try:
                        eng.add_request(request, sink)
                    except Exception as e:  # the stream must end, not hang: answer with an error
                        log.exception("could not add request %s", request.request_id)
                        sink(GenerateOutput(request.request_id, [], "", finished=True, finish_reason="error",
                                            error=f"the engine could not accept the request: {e}"))
                else:
                    self._guard(lambda rid=payload: eng.abort_request(rid))  # type: ignore[misc]
            with self._cv:
                stopping, drain = self._stopping, self._drain
            if stopping and not drain:
                eng.abort_all("abort")
            if stopping and not eng.has_work():
                with self._cv:
                    if not self._inbox:
                        return
                continue
            if eng.has_work():
                try:
                    eng.step()
                except Exception as e:  # a failed step must not strand the streams
                    log.exception("engine step failed")
                    self.loop_error = e
                    eng.abort_all("error", error=f"engine step failed: {e!r}")
                    time.sleep(0)

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("engine command failed")


def _deliver(batch: list[tuple[asyncio.Queue[GenerateOutput], GenerateOutput]]) -> None:
    for queue, out in batch:
        queue.put_nowait(out)
