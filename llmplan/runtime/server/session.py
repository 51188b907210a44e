"""One request's life between the HTTP connection and the engine.

The session owns three guarantees the server makes:

* the request is admitted or refused *before* any response header is sent, so a full
  queue is a real 429 with ``Retry-After`` even for streaming requests;
* a client that goes away cancels its request in the engine (``engine.abort``), which
  frees its KV blocks, whether it left while queued, mid-prefill or mid-stream;
* latency metrics and the outcome counter are recorded exactly once per request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field

from starlette.requests import Request

from llmplan.runtime.engine.api import (
    AsyncEngine,
    EngineClosedError,
    GenerateOutput,
    GenerateRequest,
    InvalidRequestError,
    QueueFullError,
)
from llmplan.runtime.server.errors import APIError
from llmplan.runtime.server.metrics import ServerMetrics

log = logging.getLogger("llmplan.serve")


_BACKGROUND: set[asyncio.Task[object]] = set()


def _background(coro: Coroutine[object, object, object]) -> None:
    """Run ``coro`` to completion even if the caller is being cancelled (keeps a reference)."""
    task = asyncio.get_running_loop().create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class RequestSession:
    engine: AsyncEngine
    request: GenerateRequest
    http: Request
    metrics: ServerMetrics
    arrival: float = field(default_factory=time.monotonic)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    error: str | None = None
    _stream: AsyncIterator[GenerateOutput] | None = None
    _first: GenerateOutput | None = None
    _first_token_t: float | None = None
    _watcher: asyncio.Task[None] | None = None
    _done: bool = False
    _counted: int = 0
    _recorded: bool = False
    client_gone: bool = False

    def __post_init__(self) -> None:
        self.usage.prompt_tokens = len(self.request.prompt_token_ids)

    @property
    def rid(self) -> str:
        return self.request.request_id

    async def admit(self) -> bool:
        """Submit to the engine and wait for its first output.

        Returns False when the client left before that (the request is aborted and the
        caller has nobody to answer); raises APIError 429 when the queue is full.
        """
        self._watcher = asyncio.create_task(self._watch_disconnect(), name=f"disconnect-{self.rid}")
        first: asyncio.Task[GenerateOutput] | None = None
        try:
            # generate() may refuse at call time or on the first step of its iterator.
            self._stream = self.engine.generate(self.request)
            first = asyncio.ensure_future(anext(self._stream))
            await asyncio.wait({first, self._watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not first.done():
                # The client left while the request was queued or in prefill.
                first.cancel()
                await self._abort()
                self._record("abort")
                return False
            self._first = first.result()
            if self._first.finished and (self._first.error or self._first.finish_reason == "error"):
                # Failed before producing anything: the client still gets a real status code.
                self._done = True
                self._close_watcher()
                self._record("error")
                raise APIError(500, f"engine error: {self._first.error or 'the request failed'}")
            return True
        except QueueFullError as exc:
            self._close_watcher()
            self._record("rejected_429")
            raise APIError(
                429,
                f"the engine's waiting queue is full; retry after {exc.retry_after_s:.1f}s "
                "or lower the request rate",
                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))},
            ) from None
        except InvalidRequestError as exc:
            self._close_watcher()
            self._record("bad_request")
            raise APIError(400, str(exc), param=exc.param) from None
        except EngineClosedError as exc:
            self._close_watcher()
            self._record("draining")
            raise APIError(503, f"{exc}; send the request to another instance",
                           headers={"Retry-After": "5"}) from None
        except StopAsyncIteration:
            self._close_watcher()
            self._record("error")
            raise APIError(500, "the engine ended the request without any output") from None
        except APIError:
            raise
        except asyncio.CancelledError:
            if first is not None:
                first.cancel()
            self._abort_nowait()
            self._close_watcher()
            self._record("abort")
            raise
        except Exception as exc:  # an engine bug must still reach the client as an error
            log.exception("engine failed on request %s", self.rid)
            await self._abort()
            self._close_watcher()
            self._record("error")
            raise APIError(500, f"engine error: {exc}") from None

    async def outputs(self) -> AsyncIterator[GenerateOutput]:
        """The engine's increments, starting with the one admit() already received.

        Closing this iterator early (client disconnect, task cancelled) aborts the request.
        """
        assert self._stream is not None and self._first is not None, "admit() first"
        try:
            out: GenerateOutput | None = self._first
            while out is not None:
                self._account(out)
                yield out
                if out.finished:
                    break
                try:
                    out = await anext(self._stream)
                except StopAsyncIteration:
                    # An engine stream must end with finished=True; treat silence as an error.
                    self.error = self.error or "the engine stream ended without a finish"
                    self.finish_reason = "error"
                    out = None
        except Exception as exc:
            log.exception("engine failed on request %s", self.rid)
            self.error = f"engine error: {exc}"
            self.finish_reason = "error"
        finally:
            # This runs while Starlette cancels the response task on a disconnect, and under
            # anyio every await in a cancelled scope raises again: do the bookkeeping
            # synchronously and hand the awaits to background tasks.
            outcome = self._outcome()
            self._abort_nowait()
            self._close_watcher()
            self._record(outcome)
            aclose = getattr(self._stream, "aclose", None)
            if aclose is not None:
                _background(aclose())

    def _account(self, out: GenerateOutput) -> None:
        if out.new_token_ids and self._first_token_t is None:
            self._first_token_t = time.monotonic()
        self._counted += len(out.new_token_ids)
        # Engines report cumulative counts; fall back to counting increments when they do not.
        self.usage.completion_tokens = max(out.completion_tokens, self._counted)
        if out.prompt_tokens:
            self.usage.prompt_tokens = out.prompt_tokens
        if out.finished:
            self._done = True
            self.finish_reason = out.finish_reason or "stop"
            if out.error or out.finish_reason == "error":
                self.error = out.error or "the engine reported an error"
                self.finish_reason = "error"

    def _outcome(self) -> str:
        if self.client_gone or self.finish_reason == "abort" or not self._done:
            return "abort"
        if self.error:
            return "error"
        return "ok"

    def _record(self, outcome: str) -> None:
        if self._recorded:
            return
        self._recorded = True
        m = self.metrics
        m.outcome(outcome)
        if outcome != "ok":
            return
        now = time.monotonic()
        m.prompt_tokens.inc(self.usage.prompt_tokens)
        m.generation_tokens.inc(self.usage.completion_tokens)
        m.e2e.observe(now - self.arrival)
        if self._first_token_t is not None:
            m.ttft.observe(self._first_token_t - self.arrival)
            if self.usage.completion_tokens >= 2:
                m.tpot.observe((now - self._first_token_t) / (self.usage.completion_tokens - 1))

    async def _abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self.engine.abort(self.rid)
        except Exception:  # the engine may already have finished it
            log.debug("abort of %s failed", self.rid, exc_info=True)

    def _abort_nowait(self) -> None:
        if not self._done:
            _background(self._abort())

    async def _watch_disconnect(self) -> None:
        """Abort the request in the engine as soon as the client goes away.

        Runs for the whole life of the request, including while it waits in the queue
        and before any byte of the response is sent.
        """
        receive = self.http.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
        if not self._done:
            self.client_gone = True
            log.info("client disconnected; aborting %s", self.rid)
            await self._abort()

    def _close_watcher(self) -> None:
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
