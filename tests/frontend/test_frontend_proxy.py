"""The front end over real backend processes: routing, retry on crash, 429, P/D hand-off.

Backends here are stdlib stub servers (tests/frontend/stub_backend.py): the proxy is the
thing under test. tests/frontend/test_frontend_builtin.py runs it over real `llmplan serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time

import httpx
import pytest
from server_harness import serving_app, wait_healthy

from llmplan.frontend.admission import AdmissionQueue
from llmplan.frontend.backends import Backend, BackendPool
from llmplan.frontend.proxy import Frontend, build_app
from llmplan.routing import get_router


@contextlib.contextmanager
def backends(stub_argv, free_port, *extra_per_backend: tuple[str, ...]):
    procs, urls = [], []
    try:
        for extra in extra_per_backend:
            port = free_port()
            procs.append(subprocess.Popen(stub_argv(port, *extra)))
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_healthy(url, timeout_s=15, what="stub backend")
        yield urls
    finally:
        for p in procs:
            p.kill()
            p.wait()


def serve_frontend(frontend: Frontend, port: int):
    return serving_app(build_app(frontend), port, "front end")


def _frontend(urls, router="round-robin", max_inflight=64, **kw) -> Frontend:
    pool = BackendPool(
        [Backend(name=f"b{i}", url=u, max_inflight=max_inflight) for i, u in enumerate(urls)],
        get_router(router),
        health_interval_s=0.1,
    )
    return Frontend(pool, **kw)


def test_round_robin_spreads_and_counts(stub_argv, free_port):
    with backends(stub_argv, free_port, (), ()) as urls:
        fe = _frontend(urls)
        with serve_frontend(fe, free_port()) as url:
            seen = [
                httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}).json()["backend"]
                for _ in range(10)
            ]
            metrics = httpx.get(url + "/metrics").text
    assert seen.count("stub") == 10
    assert [b.dispatched for b in fe.pool.backends] == [5, 5]
    assert 'llmplan_frontend_requests_total{outcome="ok"} 10.0' in metrics
    assert "llmplan_frontend_load_imbalance 1.0" in metrics
    assert all(b.inflight == 0 for b in fe.pool.backends)


@pytest.mark.slow
def test_backend_crash_is_retried_and_nothing_is_lost(stub_argv, free_port):
    # b0 dies while handling its 2nd request; the proxy retries it on b1.
    with backends(stub_argv, free_port, ("--crash-after", "2"), ()) as urls:
        fe = _frontend(urls, max_retries=2)
        with serve_frontend(fe, free_port()) as url:
            codes = [
                httpx.post(
                    url + "/v1/completions", json={"prompt": "x", "max_tokens": 1}, timeout=10
                ).status_code
                for _ in range(12)
            ]
            metrics = httpx.get(url + "/metrics").text
    assert codes == [200] * 12
    assert fe.pool.backends[0].failures >= 1 and not fe.pool.backends[0].healthy
    # How many requests saw b0 die depends on whether the health poller noticed first; at least
    # one did, and each such request was retried rather than lost.
    failures = re.search(r'llmplan_frontend_backend_failures_total\{backend="b0"\} ([0-9.]+)', metrics)
    retries = re.search(r"llmplan_frontend_retries_total ([0-9.]+)", metrics)
    assert failures and float(failures.group(1)) >= 1
    assert retries and float(retries.group(1)) == float(failures.group(1))


@pytest.mark.slow
def test_full_admission_queue_answers_429_and_accounts_for_all(stub_argv, free_port):
    with backends(
        stub_argv,
        free_port,
        ("--delay", "0.4"),
    ) as urls:
        fe = _frontend(urls, max_inflight=1, admission=AdmissionQueue(capacity=1))
        with serve_frontend(fe, free_port()) as url:

            async def burst():
                async with httpx.AsyncClient(timeout=20) as c:
                    rs = await asyncio.gather(
                        *(
                            c.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 1})
                            for _ in range(6)
                        )
                    )
                return rs

            rs = asyncio.run(burst())
    codes = sorted(r.status_code for r in rs)
    assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}
    assert all(r.headers.get("retry-after") for r in rs if r.status_code == 429)


def test_malformed_json_is_400_naming_the_body(stub_argv, free_port):
    with backends(stub_argv, free_port, ()) as urls:
        with serve_frontend(_frontend(urls), free_port()) as url:
            r = httpx.post(
                url + "/v1/completions", content=b"{not json", headers={"Content-Type": "application/json"}
            )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "body"


def test_pd_hands_kv_params_from_prefill_to_decode(stub_argv, free_port):
    with backends(stub_argv, free_port, ("--name", "pre"), ("--name", "dec")) as (pre, dec):
        pool = BackendPool(
            [
                Backend(name="p0", url=pre, role="prefill", decode_url=dec),
                Backend(name="d0", url=dec, role="decode"),
            ],
            get_router("round-robin"),
        )
        with serve_frontend(Frontend(pool), free_port()) as url:
            body = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 4}).json()
    assert body["backend"] == "dec"
    assert body["received_kv"] == {"remote_engine_id": "pre", "remote_block_ids": [7]}


@pytest.mark.slow
def test_no_backend_is_503_after_timeout(stub_argv, free_port):
    with backends(stub_argv, free_port, ()) as urls:
        fe = _frontend(urls, no_backend_timeout_s=0.5)
        fe.pool.backends[0].url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        with serve_frontend(fe, free_port()) as url:
            time.sleep(0.3)  # let the health poller see it is down
            r = httpx.post(url + "/v1/completions", json={"prompt": "x"}, timeout=10)
    assert r.status_code == 503


@pytest.mark.parametrize("router", ["least-loaded", "jsq"])
@pytest.mark.slow
def test_load_aware_routers_avoid_the_busy_backend(stub_argv, free_port, router):
    with backends(stub_argv, free_port, ("--delay", "0.5"), ()) as urls:
        fe = _frontend(urls, router=router)
        with serve_frontend(fe, free_port()) as url:

            async def go():
                async with httpx.AsyncClient(timeout=20) as c:
                    slow = asyncio.create_task(c.post(url + "/v1/completions", json={"prompt": "a"}))
                    await asyncio.sleep(0.15)  # b0 now holds one request in flight
                    fast = [await c.post(url + "/v1/completions", json={"prompt": "b"}) for _ in range(3)]
                    await slow
                    return fast

            fast = asyncio.run(go())
    assert all(r.status_code == 200 for r in fast)
    assert fe.pool.backends[1].dispatched == 3  # all routed away from the busy b0
