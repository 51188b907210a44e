"""What stands between the network and an llmplan server: keys, sizes and clocks.

Used by both ``llmplan serve`` and its front end (``--instances``, ``--pd``, ``--engine vllm``):

* **API key** (vLLM's ``--api-key``): with a key, every ``/v1/*`` and ``/admin/*`` request needs
  ``Authorization: Bearer KEY``, else 401 in OpenAI's error shape; ``/health`` stays open, and
  ``/metrics`` too unless ``protect_metrics``.
* **Admin endpoints** (``/admin/*``, live migration) are off (404) unless ``enable_admin``.
* **Request size**: a body over ``max_body_bytes`` is a 413, refused from its Content-Length
  before any byte of it is read, or as soon as a chunked body passes the limit.
* **Clocks**: a request's body must arrive within ``body_timeout_s`` (408), and
  :func:`uvicorn_protocol` closes connections that do not complete their request headers within
  ``header_timeout_s`` (a half-open or slowloris client), on top of uvicorn's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from llmplan.errors import LlmplanError

DEFAULT_MAX_BODY_BYTES = 8 << 20  # 8 MiB: ~2M tokens of text, far beyond any context served


@dataclass(frozen=True, slots=True)
class GuardConfig:
    api_key: str | None = None
    protect_metrics: bool = False
    enable_admin: bool = False
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = 60.0
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise LlmplanError("--api-key is empty; give a non-empty key (or leave it out)")
        if self.max_body_bytes < 1:
            raise LlmplanError(f"--max-request-mb must be > 0 (got {self.max_body_bytes} bytes)")


def check_exposure(host: str, cfg: GuardConfig) -> None:
    """Admin endpoints reachable from other machines without a key are refused."""
    if cfg.enable_admin and cfg.api_key is None and host not in ("127.0.0.1", "localhost", "::1"):
        raise LlmplanError(
            f"--enable-admin on --host {host} without --api-key would let anyone on the network move "
            "layers; add --api-key KEY (or LLMPLAN_API_KEY) or bind --host 127.0.0.1"
        )


def error_json(status: int, message: str, param: str | None = None) -> bytes:
    from llmplan.runtime.server.errors import error_body

    return json.dumps(error_body(status, message, param), separators=(",", ":")).encode()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _header(scope: dict[str, Any], name: bytes) -> bytes | None:
    for k, v in scope.get("headers") or ():
        if k == name:
            return v
    return None


def _is_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class Guard:
    """Pure ASGI middleware (a streaming response and the disconnect watcher see the raw
    ``receive``; no buffering)."""

    def __init__(self, app: Any, cfg: GuardConfig) -> None:
        self.app = app
        self.cfg = cfg
        self._key = cfg.api_key.encode() if cfg.api_key is not None else None

    def _needs_key(self, path: str) -> bool:
        return (_is_under(path, "/v1") or _is_under(path, "/admin")
                or (self.cfg.protect_metrics and _is_under(path, "/metrics")))

    def _authorized(self, scope: dict[str, Any]) -> bool:
        scheme, _, token = (_header(scope, b"authorization") or b"").partition(b" ")
        assert self._key is not None
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._key)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: C901 - ASGI middleware: key, size and admin checks run in one pass before the body is read
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        cfg = self.cfg
        if _is_under(path, "/admin") and not cfg.enable_admin:
            await _respond(send, 404, "the admin endpoints are off; start the server with --enable-admin "
                           "(and --api-key)")
            return
        if self._key is not None and self._needs_key(path) and not self._authorized(scope):
            await _respond(send, 401, "missing or wrong API key; send the header 'Authorization: Bearer "
                           "<key>' with the server's --api-key", {"WWW-Authenticate": "Bearer"})
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                await _respond(send, 400, "the Content-Length header is not a number")
                return
            if n > cfg.max_body_bytes:
                await _respond(send, 413, _too_large(cfg.max_body_bytes))
                return

        received = 0
        more = True
        deadline = time.monotonic() + cfg.body_timeout_s

        async def guarded_receive() -> dict[str, Any]:
            nonlocal received, more
            if not more:
                return await receive()
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                raise _Refused(408, f"the request body did not arrive within {cfg.body_timeout_s:g}s; "
                               "send it at once") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cfg.max_body_bytes:
                    raise _Refused(413, _too_large(cfg.max_body_bytes))
                more = bool(message.get("more_body", False))
            else:
                more = False
            return message

        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except _Refused as exc:
            if started:
                raise
            await _respond(send, exc.status, exc.message, {"Connection": "close"})


def _too_large(limit: int) -> str:
    return (f"the request body is larger than this server's limit of {limit / (1 << 20):g} MiB; "
            "send a shorter prompt (or raise --max-request-mb)")


async def _respond(send: Any, status: int, message: str, headers: dict[str, str] | None = None) -> None:
    body = error_json(status, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _HeaderTimeoutH11(H11Protocol):
    """uvicorn's h11 protocol plus a clock on request headers: a connection that has not sent a
    complete request head ``header_timeout_s`` after it opened (or after its last response) is
    closed. uvicorn's own keep-alive timer stops at the first byte, so without this a client
    that sends a byte now and then (or nothing, on a half-open connection) is held forever."""

    header_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        timer = getattr(self, "_header_clock", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _arm_header_clock(self) -> None:
        timer = getattr(self, "_header_clock", None)
        if timer is not None:
            timer.cancel()
        if not self.transport.is_closing():
            self._header_clock = self.loop.call_later(self.header_timeout_s, self._header_clock_expired)

    def _header_clock_expired(self) -> None:
        self._header_clock = None
        # IDLE: no complete request head since the clock started (a request in progress, or a
        # response being streamed, is past it).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(cfg: GuardConfig) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for the connection clocks of ``cfg``."""
    proto = type("LlmplanH11Protocol", (_HeaderTimeoutH11,), {"header_timeout_s": cfg.header_timeout_s})
    return {"http": proto, "timeout_keep_alive": cfg.keep_alive_s}


def install_guard(app: Any, cfg: GuardConfig) -> None:
    """Wrap a Starlette/FastAPI ``app`` (outermost of its middleware)."""
    app.add_middleware(Guard, cfg=cfg)
