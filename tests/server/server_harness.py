"""Real uvicorn on 127.0.0.1 with a free port, in a background thread; plus small helpers."""

from __future__ import annotations

import random
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from llmplan.runtime.server.run import ServeOptions, build_server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_run(n: int) -> int:
    """First of ``n`` consecutive free ports, below the kernel's ephemeral range (32768+) so no
    outgoing connection of a parallel process can take one between this check and the bind."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no run of {n} free ports in 20000-32767")


@contextmanager
def _in_thread(server: uvicorn.Server, port: int, what: str, timeout_s: float = 30.0) -> Iterator[str]:
    """Run ``server`` in a daemon thread until the block ends; its url once it has started."""
    # uvicorn installs signal handlers only from the main thread; here it skips them.
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def running_server(engine, **opts) -> Iterator[str]:
    """llmplan's own server (``build_server``) over ``engine`` on a free port."""
    port = free_port()
    with _in_thread(build_server(engine, ServeOptions(port=port, log_level="warning", **opts)), port,
                    "test server") as url:  # fmt: skip
        yield url


@contextmanager
def serving_app(app, port: int | None = None, what: str = "test app") -> Iterator[str]:
    """Any ASGI ``app`` (a front end, a fake backend) under uvicorn on 127.0.0.1."""
    port = free_port() if port is None else port
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    with _in_thread(server, port, what) as url:
        yield url


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
