"""Real uvicorn on 127.0.0.1 with a free port, in a background thread; plus small helpers."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx
from prometheus_client.parser import text_string_to_metric_families

from llmplan.runtime.server.run import ServeOptions, build_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(engine, **opts) -> Iterator[str]:
    port = free_port()
    server = build_server(engine, ServeOptions(port=port, log_level="warning", **opts))
    # uvicorn installs signal handlers only from the main thread; here it skips them.
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` (with these labels) in the server's /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                seen = True
    if not seen:
        raise KeyError(f"{name}{labels or ''} not in /metrics")
    return total


def wait_healthy(
    url: str, proc: subprocess.Popen | None = None, timeout_s: float = 90.0, what: str = "server"
) -> float:
    """Poll ``url``/health until it answers 200; the seconds it took. Fails at once (with the
    process's output, when it is piped) if ``proc`` exits first, and after ``timeout_s``."""
    t0 = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout is not None else ""
            raise AssertionError(f"{what} exited with {proc.returncode} before /health answered:\n{out}")
        with suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{what} at {url} did not become healthy within {timeout_s:g}s")
        time.sleep(0.05)


def wait_until(cond: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)
