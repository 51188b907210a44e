"""Running the app under uvicorn with a graceful drain.

On SIGTERM (or Ctrl-C) the server first marks itself draining, so requests arriving on
already-open connections get a 503 and ``/health`` turns 503 for load balancers; uvicorn
then stops listening and waits for in-flight responses, and the app's lifespan drains
the engine. In-flight requests finish; nothing new is accepted; the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import uvicorn

from llmplan.runtime.engine.api import AsyncEngine
from llmplan.runtime.server.app import create_app, state_of
from llmplan.runtime.server.guard import GuardConfig, uvicorn_options

log = logging.getLogger("llmplan.serve")


@dataclass(slots=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    # Seconds to wait for in-flight requests after SIGTERM before cancelling them; None waits.
    drain_timeout_s: float | None = 600.0
    log_level: str = "info"
    access_log: bool = False
    # API key, admin switch, body size and connection clocks (llmplan.runtime.server.guard).
    guard: GuardConfig = field(default_factory=GuardConfig)


class _DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit_signal: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit_signal = on_exit_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs in the signal handler: only flip flags here. Unlike uvicorn's own handler
        # this does not re-raise the signal after shutdown, so a completed drain exits 0.
        self._on_exit_signal()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C stops waiting for requests in flight
        else:
            self.should_exit = True


def build_server(engine: AsyncEngine, opts: ServeOptions) -> uvicorn.Server:
    app = create_app(engine, served_model_name=opts.served_model_name, guard=opts.guard)
    state = state_of(app)

    def mark_draining() -> None:
        state.draining = True

    config = uvicorn.Config(
        app,
        host=opts.host,
        port=opts.port,
        log_level=opts.log_level,
        access_log=opts.access_log,
        timeout_graceful_shutdown=opts.drain_timeout_s,
        # A 500-request burst must queue in the kernel rather than be refused at connect.
        backlog=4096,
        lifespan="on",
        **uvicorn_options(opts.guard),
    )
    return _DrainingServer(config, mark_draining)


def serve(engine: AsyncEngine, opts: ServeOptions) -> None:
    """Block serving ``engine`` until SIGTERM/SIGINT, then drain and return."""
    server = build_server(engine, opts)
    server.run()
    if not server.started:
        raise OSError(f"the server did not start on {opts.host}:{opts.port}; is the port in use?")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True
