"""Supervise engine server processes: launch, wait for health, detect crashes, restart.

The supervisor knows nothing about vLLM or the built-in engine: an instance is an argv,
an environment and a port that answers ``GET /health`` with 200 once it can serve.
Every state change is an event, so the proxy in front can stop routing to a crashed
instance and the operator sees why (exit code and the tail of its log).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from llmplan.errors import LlmplanError
from llmplan.roles import Role

Status = Literal["pending", "starting", "healthy", "crashed", "failed", "stopped"]
EventKind = Literal["started", "healthy", "crashed", "restarting", "failed", "stopped"]


@dataclass(slots=True)
class InstanceSpec:
    name: str
    argv: list[str]
    port: int
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    role: Role = "both"
    health_path: str = "/health"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(slots=True)
class SupervisorEvent:
    t: float
    instance: str
    kind: EventKind
    detail: str = ""


@dataclass(slots=True)
class InstanceState:
    spec: InstanceSpec
    status: Status = "pending"
    restarts: int = 0
    last_exit_code: int | None = None
    log_path: Path | None = None
    proc: asyncio.subprocess.Process | None = None


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when its parent dies (Linux's
    PR_SET_PDEATHSIG), so a front end killed with SIGKILL leaves no backend behind. The
    backends drain on SIGTERM; their clients (the front end's connections) are gone anyway."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_death_signal() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would send it
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


def _port_taken(spec: InstanceSpec) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((spec.host, spec.port))
        except OSError:
            return True
        return False


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


class Supervisor:
    """Launch and watch a set of OpenAI-compatible server processes.

    ``start()`` returns once every instance answers its health check, or raises a
    one-line error naming the instance that did not come up and the end of its log.
    A monitor task then polls the processes; a crashed instance is reported through
    ``on_event`` and restarted up to ``max_restarts`` times with exponential backoff.
    """

    def __init__(
        self,
        specs: list[InstanceSpec],
        *,
        log_dir: str | Path,
        health_timeout_s: float = 600.0,
        poll_interval_s: float = 0.2,
        max_restarts: int = 3,
        restart_backoff_s: float = 1.0,
        on_event: Callable[[SupervisorEvent], None] | None = None,
    ) -> None:
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise LlmplanError(f"instance names must be unique, got {names}; rename the duplicates")
        self.instances = {s.name: InstanceState(spec=s) for s in specs}
        self.log_dir = Path(log_dir)
        self.health_timeout_s = health_timeout_s
        self.poll_interval_s = poll_interval_s
        self.max_restarts = max_restarts
        self.restart_backoff_s = restart_backoff_s
        self.events: list[SupervisorEvent] = []
        self._on_event = on_event
        self._monitor_task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- events -------------------------------------------------------------------------
    def _emit(self, instance: str, kind: EventKind, detail: str = "") -> None:
        event = SupervisorEvent(time.time(), instance, kind, detail)
        self.events.append(event)
        if self._on_event is not None:
            self._on_event(event)

    # -- process control ----------------------------------------------------------------
    async def _launch(self, st: InstanceState) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        st.log_path = self.log_dir / f"{st.spec.name}.log"
        log = open(st.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            st.proc = await asyncio.create_subprocess_exec(
                *st.spec.argv,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, **st.spec.env},
                # Own process group: stopping the instance stops its workers too.
                start_new_session=True,
                # ... and it dies with this process, even on SIGKILL.
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except FileNotFoundError as exc:
            raise LlmplanError(
                f"cannot start instance {st.spec.name}: {st.spec.argv[0]!r} not found; "
                "install it or fix the command"
            ) from exc
        finally:
            log.close()
        st.status = "starting"
        self._emit(st.spec.name, "started", f"pid {st.proc.pid}")

    async def _wait_healthy(self, st: InstanceState, client: httpx.AsyncClient) -> bool:
        deadline = time.monotonic() + self.health_timeout_s
        url = st.spec.url + st.spec.health_path
        while time.monotonic() < deadline:
            if st.proc is not None and st.proc.returncode is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.get(url, timeout=2.0)
                if resp.status_code == 200:
                    st.status = "healthy"
                    self._emit(st.spec.name, "healthy", url)
                    return True
            await asyncio.sleep(self.poll_interval_s)
        return False

    async def start(self) -> None:
        for st in self.instances.values():
            await self._launch(st)
        async with httpx.AsyncClient() as client:
            ok = await asyncio.gather(*(self._wait_healthy(st, client) for st in self.instances.values()))
        bad = [st for st, good in zip(self.instances.values(), ok, strict=True) if not good]
        if bad:
            st = bad[0]
            code = st.proc.returncode if st.proc else None
            await self.stop()
            why = (
                f"exited with code {code}"
                if code is not None
                else f"not healthy in {self.health_timeout_s:.0f}s"
            )
            raise LlmplanError(f"instance {st.spec.name} {why}; log {st.log_path}: {_tail(st.log_path)}")
        self._monitor_task = asyncio.create_task(self._monitor())

    async def _monitor(self) -> None:
        async with httpx.AsyncClient() as client:
            while not self._stopping:
                for st in list(self.instances.values()):
                    proc = st.proc
                    if st.status != "healthy" or proc is None or proc.returncode is None:
                        continue
                    st.status = "crashed"
                    st.last_exit_code = proc.returncode
                    self._emit(st.spec.name, "crashed", f"exit code {proc.returncode}; {_tail(st.log_path)}")
                    if st.restarts >= self.max_restarts:
                        st.status = "failed"
                        self._emit(st.spec.name, "failed", f"gave up after {st.restarts} restarts")
                        continue
                    st.restarts += 1
                    delay = self.restart_backoff_s * 2 ** (st.restarts - 1)
                    self._emit(st.spec.name, "restarting", f"attempt {st.restarts} in {delay:.1f}s")
                    await asyncio.sleep(delay)
                    if self._stopping:
                        return
                    if _port_taken(st.spec):
                        # Someone else took the port meanwhile: its answers to our health
                        # checks would pass for the restarted instance.
                        st.status = "failed"
                        self._emit(st.spec.name, "failed", f"port {st.spec.port} on {st.spec.host} is now "
                                   "held by a process this front end did not start; not restarting")
                        continue
                    await self._launch(st)
                    if not await self._wait_healthy(st, client):
                        st.status = "failed"
                        self._emit(
                            st.spec.name, "failed", f"restart did not become healthy; {_tail(st.log_path)}"
                        )
                await asyncio.sleep(self.poll_interval_s)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every instance (they drain), then SIGKILL what is left after the timeout."""
        self._stopping = True
        if self._monitor_task is not None:
            self._monitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor_task
        running = [st for st in self.instances.values() if st.proc is not None and st.proc.returncode is None]
        for st in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(st.proc.pid, signal.SIGTERM)  # type: ignore[union-attr]
        for st in running:
            assert st.proc is not None
            try:
                await asyncio.wait_for(st.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(st.proc.pid, signal.SIGKILL)
                await st.proc.wait()
            st.status = "stopped"
            self._emit(st.spec.name, "stopped", f"exit code {st.proc.returncode}")

    def healthy(self) -> list[InstanceSpec]:
        return [st.spec for st in self.instances.values() if st.status == "healthy"]
