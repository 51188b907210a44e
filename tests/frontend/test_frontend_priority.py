"""vLLM's priority route: the front end sets each request's ``priority`` from a batch policy.

The backend here is a fake OpenAI server (real uvicorn on 127.0.0.1) that records the priority
field each request arrives with; the order those priorities give must be the order in which
the policy object itself (the simulator's) admits the same requests.
"""

from __future__ import annotations

import contextlib
import math
import random
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from server_harness import serving_app

from llmplan.batch.base import AdmissionView
from llmplan.frontend.backends import Backend, BackendPool
from llmplan.frontend.priority import VllmPriority, pack
from llmplan.frontend.proxy import Frontend
from llmplan.routing import get_router
from llmplan.workload.types import SLO

from .test_frontend_proxy import serve_frontend


@contextlib.contextmanager
def recording_backend(port: int):
    """A fake vLLM: answers every completion at once and keeps the bodies it got."""
    seen: list[dict] = []
    app = FastAPI()

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append(body)
        return JSONResponse({"id": "x", "object": "text_completion", "choices": [{"index": 0, "text": "ok"}]})

    with serving_app(app, port, "fake backend") as url:
        yield url, seen


def _requests(n: int, seed: int) -> list[dict]:
    """Deadlines a second or more apart (priorities carry them at 1 ms), lengths that repeat."""
    rng = random.Random(seed)
    slos = rng.sample(range(1, 4 * n), n)
    out = []
    for i in range(n):
        body = {"prompt": f"request {i}", "max_tokens": rng.choice([8, 32, 64, 256, 1024])}
        kind = rng.random()
        if kind < 0.4:
            body["slo_ttft_s"] = slos[i]
        elif kind < 0.8:
            body["slo_e2e_s"] = slos[i]
        out.append(body)  # the rest carry no SLO: they sort last on deadline, by length
    return out


def _policy_order(prio: VllmPriority, sent: list[tuple[float, dict]]) -> list[str]:
    """The order the policy object admits these requests in, one at a time, as the simulator's
    scheduler would ask it: the head of ``select`` each time, until all are admitted."""
    waiting = [
        prio.seq(t, 2, b["max_tokens"], SLO(ttft_s=b.get("slo_ttft_s"), e2e_s=b.get("slo_e2e_s")))
        for t, b in sent
    ]
    names = {id(s): b["prompt"] for s, (_, b) in zip(waiting, sent, strict=True)}
    view = AdmissionView(free_blocks=1 << 20, total_blocks=1 << 20, block_size=16, num_running=0,
                         max_num_seqs=1 << 10, token_budget=1 << 20)
    order = []
    while waiting:
        head = prio.policy.select(waiting, view, now=0.0)[0]
        order.append(names[id(head)])
        waiting.remove(head)
    return order


def _pool(url: str) -> BackendPool:
    return BackendPool([Backend(name="vllm0", url=url)], get_router("round-robin"), health_interval_s=0.1)


@pytest.mark.parametrize("admission", ["slo-odbs", "slo-dbs", "odbs", "sjf", "ljf"])
def test_priorities_sent_to_vllm_follow_the_policy_order(free_port, admission):
    prio = VllmPriority.for_admission(admission, epoch=time.monotonic())
    assert prio is not None
    with recording_backend(free_port()) as (burl, seen):
        pool = _pool(burl)
        fe = Frontend(pool, priority=prio)
        sent: list[tuple[float, dict]] = []
        with serve_frontend(fe, free_port()) as url, httpx.Client(timeout=10) as client:
            for body in _requests(24, seed=len(admission)):
                t = time.monotonic()
                assert client.post(url + "/v1/completions", json=dict(body)).status_code == 200
                sent.append((t, body))
    assert len(seen) == len(sent) and all(isinstance(b["priority"], int) for b in seen)
    assert all(-(1 << 63) <= b["priority"] < 1 << 63 for b in seen)  # vLLM's int64
    # vLLM serves lower priority first, arrival order breaking ties (stable sort).
    by_priority = [b["prompt"] for b in sorted(seen, key=lambda b: b["priority"])]
    assert by_priority == _policy_order(VllmPriority(policy=prio.policy, epoch=prio.epoch), sent)
    # Not a trivial order: the policy did reorder these requests.
    assert by_priority != [b["prompt"] for _, b in sent]


def test_fcfs_sends_no_priority_and_the_field_passes_through(free_port):
    assert VllmPriority.for_admission("fcfs") is None
    with recording_backend(free_port()) as (burl, seen):
        pool = _pool(burl)
        with serve_frontend(Frontend(pool), free_port()) as url:
            httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 4}, timeout=10)
            body = {"prompt": "b", "max_tokens": 4, "priority": 3}
            httpx.post(url + "/v1/completions", json=body, timeout=10)
    assert "priority" not in seen[0] and seen[1]["priority"] == 3


def test_bad_slo_field_is_a_400_naming_it(free_port):
    prio = VllmPriority.for_admission("slo-odbs")
    with recording_backend(free_port()) as (burl, seen):
        pool = _pool(burl)
        with serve_frontend(Frontend(pool, priority=prio), free_port()) as url:
            r = httpx.post(url + "/v1/completions", json={"prompt": "a", "max_tokens": 4, "slo_ttft_s": -1})
    assert r.status_code == 400 and "slo_ttft_s" in r.text and not seen


def test_pack_sorts_like_the_key():
    """Within each field's range (about +-1e6 units for the two-field keys the policies use) and
    resolution (1/1000), with +-inf at its ends, packed integers sort exactly like the keys."""
    rng = random.Random(0)
    for n in (1, 2, 3):
        lim = min((1 << (62 // n - 1)) - 2, 1 << 50) / 1000  # short of +-inf; exact in a float
        vals = [math.inf, -math.inf, 0.0, lim, -lim]

        keys = sorted({
            tuple(rng.choice([*vals, round(rng.uniform(-lim, lim), 3), float(rng.randrange(int(lim)))])
                  for _ in range(n))
            for _ in range(500)
        })
        keys = sorted(set(keys) | {k[:-1] + (round(k[-1], 3) + 0.001,) for k in keys if abs(k[-1]) < lim - 1})
        packed = [pack(k) for k in keys]
        assert all(-(1 << 63) <= p < 1 << 63 for p in packed)
        assert all(a < b for a, b in zip(packed, packed[1:], strict=False)), n


def test_scheduler_route_sends_slos_as_vllm_xargs(free_port):
    """--vllm-route scheduler-cls: llmplan's PolicyScheduler inside vLLM reads a request's SLOs from
    ``SamplingParams.extra_args``, which vLLM fills from the body's ``vllm_xargs``."""
    with recording_backend(free_port()) as (burl, seen):
        pool = _pool(burl)
        fe = Frontend(pool, slo_xargs=True)
        with serve_frontend(fe, free_port()) as url, httpx.Client(timeout=10) as c:
            body = {"prompt": "a", "max_tokens": 4, "slo_ttft_s": 2, "slo_e2e_s": 30.5, "slo_tpot_s": 0.1}
            body["vllm_xargs"] = {"k": 1}
            assert c.post(url + "/v1/completions", json=body).status_code == 200
            assert c.post(url + "/v1/completions", json={"prompt": "b", "max_tokens": 4}).status_code == 200
            body = {"prompt": "c", "max_tokens": 4, "slo_ttft_s": 1.5, "stream": True}
            with c.stream("POST", url + "/v1/completions", json=body) as r:
                assert r.status_code == 200
                r.read()
    assert seen[0]["vllm_xargs"] == {"k": 1, "slo_ttft_s": 2, "slo_e2e_s": 30.5, "slo_tpot_s": 0.1}
    assert not {"slo_ttft_s", "slo_e2e_s", "slo_tpot_s"} & set(seen[0])  # not vLLM request fields
    assert "vllm_xargs" not in seen[1]
    assert seen[2]["vllm_xargs"] == {"slo_ttft_s": 1.5}
