"""No request is lost: 500 concurrent requests over loopback, every one accounted for."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
import pytest
from server_harness import metric, wait_until

N = 500
MAX_TOKENS = 3
BUDGET_S = 30.0


async def _one(client: httpx.AsyncClient, url: str, i: int) -> tuple[str, object]:
    body = {"prompt": [1000 + i % 500] * (4 + i % 7), "max_tokens": MAX_TOKENS, "ignore_eos": True}
    if i % 2:  # half streamed, half not: both paths must account for their requests
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", url + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                return str(r.status_code), dict(r.headers) | {"_body": (await r.aread()).decode()}
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            return "200", lines
    r = await client.post(url + "/v1/completions", json=body)
    return str(r.status_code), (r.json(), dict(r.headers))


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_500_concurrent_requests_all_accounted_for(server, tiny_engine):
    ok0 = metric(server, "llmplan_e2e_seconds_count")
    rejected0 = _rejected(server)

    async def burst():
        # 16 clients of 32 connections: one httpx pool of 500 would be the bottleneck, not the server.
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        clients = [httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(BUDGET_S)) for _ in range(16)]
        try:
            return await asyncio.gather(
                *(_one(clients[i % 16], server, i) for i in range(N)), return_exceptions=True
            )
        finally:
            await asyncio.gather(*(c.aclose() for c in clients))

    t = time.monotonic()
    results = asyncio.run(burst())
    elapsed = time.monotonic() - t
    assert elapsed < BUDGET_S

    exceptions = [r for r in results if isinstance(r, BaseException)]
    assert not exceptions, f"{len(exceptions)} requests ended without an HTTP answer: {exceptions[:3]}"
    by_status = Counter(status for status, _ in results)
    print(f"\n{N} requests in {elapsed:.1f}s: {dict(by_status)}")
    assert set(by_status) <= {"200", "429"}, by_status
    assert by_status["200"] > 0

    for i, (status, payload) in enumerate(results):
        if status == "429":
            headers = payload[1] if isinstance(payload, tuple) else payload
            assert int(headers["retry-after"]) >= 1
        elif i % 2:  # streamed: every stream ends with a finish, its usage and [DONE]
            assert payload[-1] == "data: [DONE]"
            assert '"completion_tokens":3' in payload[-2]
            assert '"finish_reason":"length"' in payload[-3]
        else:
            body, _ = payload
            assert body["usage"]["completion_tokens"] == MAX_TOKENS
            assert body["choices"][0]["finish_reason"] == "length"

    # The server's own books agree with the client's: completions + 429s = 500.
    assert metric(server, "llmplan_e2e_seconds_count") - ok0 == by_status["200"]
    assert _rejected(server) - rejected0 == by_status["429"]
    wait_until(lambda: tiny_engine.stats().kv_blocks_used == 0 and tiny_engine.stats().running == 0
               and tiny_engine.stats().waiting == 0, what="the engine to drain")


def _rejected(url: str) -> float:
    try:
        return metric(url, "llmplan_requests_total", outcome="rejected_429")
    except KeyError:
        return 0.0
