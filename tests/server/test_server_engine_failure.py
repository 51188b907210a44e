"""An engine step that fails reaches the client as an explicit error, never as silence.

Faults are injected into the real engine's executor (the torch forward pass raises).
"""

from __future__ import annotations

import json

import httpx
import pytest
from server_harness import metric, running_server, wait_until


@pytest.fixture(scope="module")
def faulty():
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=4, num_kv_blocks=64, max_queue=8)
    executor = engine.engine.executor
    real = executor.execute
    plan = {"fail_after": None, "calls": 0}

    def execute(batch):
        plan["calls"] += 1
        if plan["fail_after"] is not None and plan["calls"] > plan["fail_after"]:
            raise RuntimeError("injected device fault")
        return real(batch)

    executor.execute = execute
    with running_server(engine) as url:
        yield engine, url, plan


def test_failure_before_the_first_token_is_a_500(faulty):
    engine, url, plan = faulty
    plan.update(fail_after=0, calls=0)
    for stream in (False, True):
        r = httpx.post(url + "/v1/completions",
                       json={"prompt": [300] * 8, "max_tokens": 4, "stream": stream}, timeout=30)
        assert r.status_code == 500
        err = r.json()["error"]
        assert err["type"] == "server_error" and "injected device fault" in err["message"]
    assert metric(url, "llmplan_requests_total", outcome="error") == 2
    wait_until(lambda: engine.stats().kv_blocks_used == 0, what="blocks of the failed requests to be freed")


def test_failure_mid_stream_ends_with_an_error_event_and_done(faulty):
    engine, url, plan = faulty
    plan.update(fail_after=4, calls=0)
    body = {"prompt": [300] * 8, "max_tokens": 50, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = [x for x in r.iter_lines() if x.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][6:])
    assert "injected device fault" in last["error"]["message"]
    assert 1 <= len(lines) - 2 < 50  # some tokens were streamed, then the error

    # The engine recovers once the fault is gone.
    plan.update(fail_after=None)
    ok = httpx.post(url + "/v1/completions", json={"prompt": [300] * 8, "max_tokens": 3, "ignore_eos": True},
                    timeout=30)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    wait_until(lambda: engine.stats().kv_blocks_used == 0, what="all blocks to be freed")
