"""The front end under the same schema-driven fuzz as `llmplan serve` (the API document of the
engine server it fronts): its own handling (parsing, the fields it routes and queues by) must
never answer 5xx or hang. Stub backends (stdlib processes) answer whatever reaches them."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).parent))

from test_frontend_proxy import _frontend, backends, serve_frontend  # noqa: E402

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("LLMPLAN_FUZZ_EXAMPLES", "25"))


class _DocOnlyEngine:
    """Enough of an engine for create_app to write its OpenAPI document."""

    model_name = "stub"
    max_model_len = 64
    tokenizer = None

    def stats(self):
        from llmplan.runtime.engine.api import EngineStats

        return EngineStats()


@pytest.mark.slow
def test_front_end_fuzz_never_answers_5xx_or_hangs(stub_argv, free_port):
    from llmplan.runtime.server.app import create_app

    doc = create_app(_DocOnlyEngine()).openapi()
    doc["paths"] = {p: v for p, v in doc["paths"].items() if p.startswith("/v1/c")}
    schema = schemathesis.openapi.from_dict(doc)
    tally: Counter = Counter()
    with (backends(stub_argv, free_port, (), ()) as urls,
          serve_frontend(_frontend(urls), free_port()) as url,
          requests.Session() as session):
        for result in schema.get_all_operations():
            op = result.ok()
            for mode in schemathesis.GenerationMode:

                @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(case=op.as_strategy(generation_mode=mode))
                def run(case) -> None:
                    t0 = time.monotonic()
                    resp = case.call(base_url=url, session=session, timeout=30)
                    tally[resp.status_code] += 1
                    got = f"{case.body!r:.300} -> {resp.status_code} {resp.text[:300]}"
                    assert resp.status_code < 500, got
                    assert time.monotonic() - t0 < 30

                run()
    print(f"\nfront-end fuzz: {sum(tally.values())} requests; statuses {dict(sorted(tally.items()))}")
    assert sum(tally.values()) >= 4 * EXAMPLES


@pytest.mark.parametrize("body, param", [
    ({"prompt": "hi", "max_tokens": "lots"}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": [1]}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "hi", "max_tokens": True}, "max_tokens"),
    ({"messages": [], "max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"prompt": "hi", "stream": "yes"}, "stream"),
    ({"prompt": "hi", "slo_e2e_s": "soon"}, "slo_e2e_s"),
    ({"prompt": "hi", "slo_e2e_s": -1}, "slo_e2e_s"),
    (b'{"prompt": "hi", "slo_e2e_s": Infinity}', "slo_e2e_s"),
])
def test_fields_the_front_end_routes_by_are_checked_there(stub_argv, free_port, body, param):
    import httpx

    with backends(stub_argv, free_port, ()) as urls, serve_frontend(_frontend(urls), free_port()) as url:
        sent = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(url + "/v1/completions", timeout=30, **sent)
        ok = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 10**40}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert ok.status_code == 200, "a huge max_tokens is the backend's to refuse, not a front-end crash"
