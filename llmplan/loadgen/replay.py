"""Replay a workload against a live OpenAI-compatible server, open loop (sessions closed loop).

Each request is sent at its trace arrival time divided by ``time_scale`` (4 replays the
trace four times faster, like ``--rate-scale`` does for the simulator), whether or not
earlier ones have finished, as real traffic arrives. A closed-loop session turn
(``RequestSpec.follows``, e.g. ``sharegpt-multiturn``) is the exception: it is sent
``think_s / time_scale`` seconds after the response to the turn it follows has ended (finished,
refused or failed), whatever its nominal arrival; ``concurrency_limit`` optionally caps
requests in flight (a closed-loop cap, like vLLM's ``--max-concurrency``). The result is
a :class:`RunResult` with one record per request of the workload, in the same shape the
simulator produces, so ``llmplan.metrics`` and the reports treat both alike.

While the run lasts, the server's ``/metrics`` is sampled (queue, running, KV usage) into
``RunResult.samples`` when it exports llmplan's or vLLM's gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np

from llmplan.errors import LlmplanError
from llmplan.loadgen.client import Endpoint, auth_headers, run_request
from llmplan.loadgen.prompts import DEFAULT_VOCAB, PromptSynthesizer
from llmplan.loadgen.scrape import ServerScraper
from llmplan.metrics.types import RequestRecord, RunResult
from llmplan.workload.types import RequestSpec, Workload

Progress = Callable[[int, int], None]


async def discover(client: httpx.AsyncClient, target: str) -> dict[str, Any]:
    """The served model's id, context length and vocabulary size from ``GET /v1/models``."""
    try:
        resp = await client.get(target + "/v1/models", timeout=10.0)
    except httpx.HTTPError as exc:
        raise LlmplanError(
            f"cannot reach {target} ({type(exc).__name__}); start a server first, e.g. "
            "`llmplan serve --dummy-weights llama-tiny --port 8000`"
        ) from None
    if resp.status_code == 401:
        raise LlmplanError(f"{target}/v1/models answered HTTP 401: the server wants an API key; set "
                           "LLMPLAN_API_KEY to its --api-key")
    if resp.status_code != 200:
        raise LlmplanError(
            f"{target}/v1/models answered HTTP {resp.status_code}; is it an OpenAI-compatible server?"
        )
    try:
        data = resp.json()["data"]
        model = data[0]
    except (ValueError, KeyError, IndexError, TypeError):
        raise LlmplanError(f"{target}/v1/models lists no model; is it an OpenAI-compatible server?") from None
    return {
        "model": model["id"],
        "max_model_len": model.get("max_model_len"),
        "vocab_size": model.get("vocab_size") or DEFAULT_VOCAB,
    }


class ClientPool:
    """Several httpx clients, each used by at most ~``per_client`` requests at once.

    One HTTP/1.1 connection carries one stream at a time, so a replay holds one
    connection per request in flight. httpx's connection pool gets slow past a few dozen
    connections (a 500-request burst takes 4x longer through one client than through 16),
    which would make the client, not the server, the bottleneck being measured.
    """

    def __init__(
        self, concurrency: int, timeout: httpx.Timeout, per_client: int = 32, most: int = 64
    ) -> None:
        n = max(1, min(most, -(-concurrency // per_client)))
        conns = -(-concurrency // n)
        limits = httpx.Limits(max_connections=conns, max_keepalive_connections=conns)
        headers = auth_headers()
        self.clients = [httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False, headers=headers)
                        for _ in range(n)]
        self._busy = [0] * n

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        i = min(range(len(self.clients)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            yield self.clients[i]
        finally:
            self._busy[i] -= 1

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(c.aclose() for c in self.clients), return_exceptions=True)


def _client_failure(spec: RequestSpec, reason: str, t: float) -> RequestRecord:
    return RequestRecord(
        rid=spec.rid, arrival_s=t, prompt_tokens=spec.prompt_tokens, output_tokens=0, slo=spec.slo,
        status="failed", reason=reason,
    )


async def replay_async(  # noqa: C901 - argument checks, then the open-loop sender, limit and sampler in one coroutine so cancellation reaches every task
    target: str,
    workload: Workload,
    *,
    time_scale: float = 1.0,
    max_requests: int | None = None,
    concurrency_limit: int | None = None,
    timeout_s: float = 600.0,
    progress: Progress | None = None,
    seed: int = 0,
    sample_interval_s: float = 0.5,
    model: str | None = None,
) -> RunResult:
    """Replay ``workload`` against ``target`` (``http://host:port``); see the module doc."""
    if time_scale <= 0 or not np.isfinite(time_scale):
        raise LlmplanError(f"time_scale must be a positive number, got {time_scale}")
    if concurrency_limit is not None and concurrency_limit < 1:
        raise LlmplanError(f"concurrency_limit must be at least 1, got {concurrency_limit}")
    if timeout_s <= 0:
        raise LlmplanError(f"timeout_s must be positive, got {timeout_s}")
    target = target.rstrip("/")
    if not target.startswith(("http://", "https://")):
        raise LlmplanError(f"target {target!r} is not a URL; use e.g. http://127.0.0.1:8000")
    specs = sorted(workload.requests, key=lambda r: (r.arrival_s, r.rid))
    if max_requests is not None:
        specs = specs[:max_requests]
    if not specs:
        raise LlmplanError("the workload has no requests to replay")
    t_first = specs[0].arrival_s
    present = {s.rid for s in specs}
    followers: dict[int, list[RequestSpec]] = {}
    for s in specs:
        if s.follows is not None and s.follows in present and s.follows != s.rid:
            if not (np.isfinite(s.think_s) and s.think_s >= 0):
                raise LlmplanError(f"request {s.rid} has think time {s.think_s}; think times must be "
                                   "finite and >= 0")
            followers.setdefault(s.follows, []).append(s)
    linked = {s.rid for v in followers.values() for s in v}
    scheduled = [s for s in specs if s.rid not in linked]

    cap = concurrency_limit or len(specs)
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 30.0))
    async with ClientPool(cap, timeout) as pool:
        client = pool.clients[0]
        info = await discover(client, target)
        endpoint = Endpoint(target, model or info["model"])
        prompts = PromptSynthesizer(vocab_size=int(info["vocab_size"]), seed=seed)
        sem = asyncio.Semaphore(cap)
        records: dict[int, RequestRecord] = {}
        lags: list[float] = []
        done = 0
        scraper = ServerScraper(client, target, instance=target)
        t0 = time.monotonic()
        sampler = asyncio.create_task(scraper.run(t0, sample_interval_s))

        tasks: list[asyncio.Task[None]] = []
        all_done = asyncio.Event()

        async def one(spec: RequestSpec, due: float) -> None:
            nonlocal done
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            async with sem:
                lags.append(time.monotonic() - due)
                try:
                    with pool.lease() as c:
                        rec = await run_request(
                            c, endpoint, spec, prompts.prompt(spec), t0=t0, timeout_s=timeout_s
                        )
                except Exception as exc:  # a client bug must not lose the request
                    why = f"client error: {type(exc).__name__}: {exc}"
                    rec = _client_failure(spec, why, time.monotonic() - t0)
            records[spec.rid] = rec
            done += 1
            if progress is not None:
                progress(done, len(specs))
            # The session's next turn: after this response ended plus the user's think time.
            ended = time.monotonic()
            for nxt in followers.pop(spec.rid, ()):
                tasks.append(asyncio.create_task(one(nxt, ended + nxt.think_s / time_scale)))
            if done == len(specs):
                all_done.set()

        try:
            for spec in scheduled:
                due = t0 + (spec.arrival_s - t_first) / time_scale
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(spec, due)))
            while not all_done.is_set():
                # Tasks add their sessions' next turns while they run: wait for them all.
                await asyncio.gather(*tasks)
                if not all_done.is_set() and all(t.done() for t in tasks):
                    break
        finally:
            # Cancelled (Ctrl-C) or failed: stop what is in flight before the clients close.
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        wall = time.monotonic() - t0
        await scraper.sample(t0)  # final counters (preemptions)

    ordered = [records[s.rid] for s in specs]
    statuses = {s: sum(r.status == s for r in ordered) for s in ("ok", "rejected", "failed")}
    lag = np.asarray(lags) if lags else np.zeros(1)
    meta: dict[str, Any] = {
        "mode": "live",
        "target": target,
        "model": endpoint.model,
        "max_model_len": info["max_model_len"],
        "time_scale": time_scale,
        "max_requests": max_requests,
        "concurrency_limit": concurrency_limit,
        "closed_loop_turns": len(linked),
        "timeout_s": timeout_s,
        "seed": seed,
        "wall_s": wall,
        "requests": len(specs),
        **{f"requests_{k}": v for k, v in statuses.items()},
        # How late requests left the client versus their scheduled time: a large lag means
        # the client, not the server, shaped the arrival process.
        "send_lag_p50_s": float(np.percentile(lag, 50)),
        "send_lag_max_s": float(lag.max()),
        "workload": workload.name,
        "workload_meta": dict(workload.meta),
        "client": f"llmplan.loadgen (httpx {httpx.__version__})",
    }
    return RunResult(records=ordered, samples=scraper.samples, counters=scraper.counters(), meta=meta)


def replay(
    target: str,
    workload: Workload,
    *,
    time_scale: float = 1.0,
    max_requests: int | None = None,
    concurrency_limit: int | None = None,
    timeout_s: float = 600.0,
    progress: Progress | None = None,
    seed: int = 0,
    sample_interval_s: float = 0.5,
    model: str | None = None,
) -> RunResult:
    """Blocking :func:`replay_async`, for the CLI and scripts (not inside a running event loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise LlmplanError("replay() was called inside an event loop; await replay_async() instead")
    return asyncio.run(
        replay_async(
            target, workload, time_scale=time_scale, max_requests=max_requests,
            concurrency_limit=concurrency_limit, timeout_s=timeout_s, progress=progress, seed=seed,
            sample_interval_s=sample_interval_s, model=model,
        )
    )
