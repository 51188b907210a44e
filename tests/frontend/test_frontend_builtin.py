"""The front end over real `llmplan serve` instances: streaming through the openai client,
a killed instance is reported, restarted and its traffic retried, and the live bench
replays a trace against the combined endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
import pytest

from llmplan.frontend.deploy import DeployConfig, serve_deployment
from llmplan.frontend.launch import builtin_spec

pytest.importorskip("openai")

# Real multi-process deployments: the module fixture alone starts several engine processes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    import socket

    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    specs = [builtin_spec(f"engine{i}", port(), dummy_weights="llama-tiny") for i in range(2)]
    cfg = DeployConfig(
        port=port(),
        router="least-loaded",
        log_dir=tmp_path_factory.mktemp("logs"),
        health_timeout_s=120,
        max_restarts=2,
    )
    ready: dict = {}
    stop = threading.Event()
    events: list = []
    thread = threading.Thread(
        target=lambda: asyncio.run(
            serve_deployment(
                specs,
                cfg,
                on_event=events.append,
                ready=lambda url, sup, fe: ready.update(url=url, sup=sup, fe=fe),
                stop=stop,
            )
        ),
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 180
    while "url" not in ready:
        assert thread.is_alive(), "deployment died during start-up; see the instance logs"
        assert time.monotonic() < deadline, "deployment did not become ready"
        time.sleep(0.1)
    yield ready["url"], ready["sup"], ready["fe"], events
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert all(st.proc.returncode is not None for st in ready["sup"].instances.values())


def test_openai_client_streams_through_the_front_end(deployment):
    import openai

    url, _, fe, _ = deployment
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    stream = client.completions.create(
        model="llama-tiny", prompt="hello there", max_tokens=6, stream=True, temperature=0
    )
    pieces = [c.choices[0].text for c in stream if c.choices]
    assert len(pieces) >= 1 and "".join(pieces)
    models = client.models.list()
    assert [m.id for m in models.data] == ["llama-tiny"]


def test_killed_instance_is_restarted_and_no_request_is_lost(deployment):
    url, sup, fe, events = deployment
    victim = sup.instances["engine0"]
    os.killpg(victim.proc.pid, signal.SIGKILL)

    async def traffic():
        async with httpx.AsyncClient(timeout=60) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        url + "/v1/completions",
                        json={"prompt": [5, 6, 7], "max_tokens": 3, "ignore_eos": True},
                    )
                    for _ in range(20)
                )
            )

    rs = asyncio.run(traffic())
    # Every request ends in a completion or an explicit error, none vanish.
    assert len(rs) == 20
    ok = [r for r in rs if r.status_code == 200]
    assert all(r.json()["usage"]["completion_tokens"] == 3 for r in ok)
    assert all(r.status_code in (200, 502, 503) and r.json() for r in rs)
    assert len(ok) >= 18
    deadline = time.monotonic() + 120
    while not (victim.restarts == 1 and victim.status == "healthy"):
        assert time.monotonic() < deadline, f"engine0 not restarted: {[(e.kind, e.detail) for e in events]}"
        time.sleep(0.2)
    kinds = [(e.instance, e.kind) for e in events]
    assert ("engine0", "crashed") in kinds and ("engine0", "restarting") in kinds
    metrics = httpx.get(url + "/metrics").text
    assert 'llmplan_frontend_instance_events_total{instance="engine0",kind="crashed"} 1.0' in metrics


def test_live_bench_against_the_combined_endpoint(deployment):
    from llmplan.loadgen import replay
    from llmplan.workload.types import RequestSpec, Workload

    url, *_ = deployment
    wl = Workload(
        "tiny",
        [RequestSpec(rid=i, arrival_s=0.05 * i, prompt_tokens=8 + i, output_tokens=4) for i in range(8)],
    )
    result = replay(url, wl)
    assert len(result.records) == 8
    assert all(r.status == "ok" for r in result.records), [r.reason for r in result.records]
    assert all(r.output_tokens == 4 and r.ttft_s is not None and r.ttft_s >= 0 for r in result.records)
