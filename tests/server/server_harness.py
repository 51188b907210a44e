"""Real uvicorn on 127.0.0.1 with a free port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from llmplan.runtime.server.run import ServeOptions, build_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(engine, **opts) -> Iterator[str]:
    port = free_port()
    server = build_server(engine, ServeOptions(port=port, log_level="warning", **opts))
    # Signal handlers can only be installed from the main thread; uvicorn skips them here.
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        httpx.get(url + "/health", timeout=5).raise_for_status()
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
