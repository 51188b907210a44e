"""The front end's view of its backends: health, slots in use, scraped KV usage.

Routing decisions are delegated to the same router objects the simulator uses
(``llmplan.routing``); this module only turns live backend state into their load
snapshot and keeps the counts honest (every dispatch is released exactly once).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from llmplan.roles import Role
from llmplan.routing.base import InstanceLoad, Router
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class Backend:
    name: str
    url: str
    role: Role = "both"
    max_inflight: int = 64
    healthy: bool = True
    inflight: int = 0
    dispatched: int = 0
    failures: int = 0
    kv_usage: float | None = None  # 0..1, scraped from the backend's /metrics when it exports one
    waiting: int = 0  # the backend's own queue, when exported
    waiting_tokens: int = 0  # prompt tokens still to prefill in that queue, when exported
    kv_blocks: tuple[int, int] | None = None  # (used, total) when exported
    busy: float | None = None  # share of the last poll interval spent computing, when exported
    busy_seconds: tuple[float, float] | None = None  # (scraped busy seconds, monotonic time)
    # P/D: the decode instance this prefill instance hands its KV to (None when colocated).
    decode_url: str | None = None


# KV-usage gauges, in the order tried: llmplan serve, vLLM v1, vLLM v0.
_KV_PATTERNS = (
    re.compile(r"^llmplan_kv_usage_ratio(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),
    re.compile(r"^vllm:kv_cache_usage_perc(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),
    re.compile(r"^vllm:gpu_cache_usage_perc(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),
)
_WAITING_TOKENS = (re.compile(r"^llmplan_waiting_tokens(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),)
_BUSY_SECONDS = (re.compile(r"^llmplan_busy_seconds_total(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),)
_KV_USED = (re.compile(r"^llmplan_kv_blocks_used(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),)
_KV_TOTAL = (re.compile(r"^llmplan_kv_blocks_total(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),)
_WAITING_PATTERNS = (
    re.compile(r"^llmplan_requests_waiting(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),
    re.compile(r"^vllm:num_requests_waiting(?:\{[^}]*\})? ([0-9.eE+-]+)$", re.M),
)


def _first_match(patterns: tuple[re.Pattern[str], ...], text: str) -> float | None:
    for pat in patterns:
        m = pat.search(text)
        if m:
            return float(m.group(1))
    return None


def scrape_load(b: Backend, text: str, now: float) -> None:
    """Fill ``b``'s load fields from its /metrics text scraped at monotonic time ``now``."""
    b.kv_usage = _first_match(_KV_PATTERNS, text)
    waiting = _first_match(_WAITING_PATTERNS, text)
    b.waiting = int(waiting) if waiting is not None else 0
    wt = _first_match(_WAITING_TOKENS, text)
    b.waiting_tokens = int(wt) if wt is not None else 0
    used, total = _first_match(_KV_USED, text), _first_match(_KV_TOTAL, text)
    b.kv_blocks = (int(used), int(total)) if used is not None and total else None
    busy_s = _first_match(_BUSY_SECONDS, text)
    if busy_s is None:
        b.busy, b.busy_seconds = None, None
        return
    if b.busy_seconds is not None and now > b.busy_seconds[1]:
        b.busy = min(1.0, max(0.0, (busy_s - b.busy_seconds[0]) / (now - b.busy_seconds[1])))
    b.busy_seconds = (busy_s, now)


class BackendPool:
    def __init__(
        self,
        backends: list[Backend],
        router: Router,
        *,
        health_interval_s: float = 1.0,
        on_health_change: Callable[[], None] | None = None,
    ) -> None:
        if not backends:
            raise ValueError("a front end needs at least one backend")
        decode_urls = {b.url for b in backends if b.role == "decode"}
        for b in backends:
            if b.role == "prefill" and b.decode_url not in decode_urls:
                raise ValueError(
                    f"prefill backend {b.name} hands its KV to {b.decode_url}, which is not a decode "
                    "backend of this pool; pair it with one of its decode backends"
                )
        self.backends = backends
        self.router = router
        self.health_interval_s = health_interval_s
        self.on_health_change = on_health_change
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        # Sent with every poll (the backends' API key, for a /metrics that needs it).
        self.headers: dict[str, str] = {}

    # -- routing ------------------------------------------------------------------------
    def _live(self) -> list[Backend]:
        # P/D pairs are reached through their prefill side (the front end then hands the
        # request to a decode instance); a prefill instance with no healthy decode instance
        # to hand to is not routable.
        return [
            b
            for b in self.backends
            if b.healthy and b.role != "decode" and (b.role != "prefill" or self.decode_for(b) is not None)
        ]

    def _routable(self) -> list[Backend]:
        return [b for b in self._live() if b.inflight < b.max_inflight]

    def has_capacity(self) -> bool:
        return bool(self._routable())

    def any_routable(self) -> bool:
        """Some backend could take a request once it has a free slot."""
        return bool(self._live())

    def decode_for(self, prefill: Backend) -> Backend | None:
        """The decode instance that takes over ``prefill``'s request: its paired instance while
        that is healthy, else the healthy decode instance with the fewest requests in flight
        (any decode instance can read the KV: from the shared store, or by pulling it from
        the prefill instance through the connector)."""
        decodes = [b for b in self.backends if b.role == "decode" and b.healthy]
        for b in decodes:
            if b.url == prefill.decode_url:
                return b
        return min(decodes, key=lambda b: (b.inflight, b.dispatched), default=None)

    def acquire_decode(self, prefill: Backend) -> Backend | None:
        decode = self.decode_for(prefill)
        if decode is not None:
            decode.inflight += 1
            decode.dispatched += 1
        return decode

    def loads(self, candidates: list[Backend]) -> list[InstanceLoad]:
        """The routers' snapshot of live backends, with the meaning the simulator gives it
        (``llmplan.routing.base.InstanceLoad``): ``waiting`` is the backend's own queue,
        ``running`` the rest of what this front end has in flight there (never counted twice),
        ``waiting_tokens`` the queue's prompt tokens still to prefill, ``busy`` the share of
        the last poll interval the backend spent computing, KV its blocks used/total -- all
        from its /metrics (``llmplan serve`` exports each). A backend that exports no compute
        time (vLLM) gets its slot share as ``busy``; unknown KV counts as empty."""
        out = []
        for i, b in enumerate(candidates):
            used, total = b.kv_blocks or (round((b.kv_usage or 0.0) * 1000), 1000)
            out.append(
                InstanceLoad(
                    index=i,
                    name=b.name,
                    role=b.role,
                    waiting=min(b.waiting, b.inflight),
                    running=max(b.inflight - b.waiting, 0),
                    waiting_tokens=b.waiting_tokens,
                    kv_blocks_used=used,
                    kv_blocks_total=max(total, 1),
                    busy=b.busy if b.busy is not None else min(b.inflight / b.max_inflight, 1.0),
                    max_num_seqs=b.max_inflight,
                )
            )
        return out

    def try_route(self, spec: RequestSpec) -> Backend | None:
        candidates = self._routable()
        if not candidates:
            return None
        backend = candidates[self.router.route(spec, self.loads(candidates))]
        backend.inflight += 1
        backend.dispatched += 1
        return backend

    def release(self, backend: Backend) -> None:
        backend.inflight -= 1
        assert backend.inflight >= 0, f"{backend.name}: released more requests than dispatched"

    def mark_failed(self, backend: Backend) -> None:
        backend.failures += 1
        if backend.healthy:
            backend.healthy = False
            self._health_changed()

    def healthy(self) -> list[Backend]:
        return [b for b in self.backends if b.healthy]

    def any_healthy(self) -> Backend | None:
        return next(iter(self.healthy()), None)

    def max_mean_dispatch(self, role: str | None = None) -> float:
        """max/mean dispatched requests over the routed backends (or those of ``role``):
        1.0 is perfectly even."""
        counts = [b.dispatched for b in self.backends if (b.role == role if role else b.role != "decode")]
        mean = sum(counts) / len(counts) if counts else 0.0
        return max(counts) / mean if mean > 0 else 0.0

    def _health_changed(self) -> None:
        if self.on_health_change is not None:
            self.on_health_change()

    # -- health polling -----------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=2.0, headers=self.headers)
        self._task = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def poll_once(self) -> None:
        assert self._client is not None
        for b in self.backends:
            try:
                ok = (await self._client.get(b.url + "/health")).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                with contextlib.suppress(httpx.HTTPError):
                    text = (await self._client.get(b.url + "/metrics")).text
                    scrape_load(b, text, time.monotonic())
            if ok != b.healthy:
                b.healthy = ok
                self._health_changed()

    async def _poll(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.health_interval_s)
