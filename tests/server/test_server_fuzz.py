"""A standing schema-driven fuzz of `llmplan serve`'s HTTP API (schemathesis over the server's
own OpenAPI document): every operation gets schema-valid and schema-violating requests; none
may answer 5xx or hang. Real uvicorn on 127.0.0.1, real llama-tiny engine (dummy weights).

Derandomized and bounded for CI (``LLMPLAN_FUZZ_EXAMPLES`` per operation and mode, default 25);
raise it to search longer. The counts are printed with ``pytest -s``.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from server_harness import running_server

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("LLMPLAN_FUZZ_EXAMPLES", "25"))
HANG_S = 30.0  # no single answer may take longer (the context is 64 tokens: generation is short)


@pytest.fixture(scope="module")
def fuzz_server():
    from llmplan.runtime.engine import build_engine

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=8, num_kv_blocks=64, max_queue=64,
                          max_model_len=64)
    with running_server(engine) as url:
        yield url


def _fuzz(url: str, operation, mode, tally: Counter, session: requests.Session) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case) -> None:
        t0 = time.monotonic()
        resp = case.call(base_url=url, session=session, timeout=HANG_S)
        took = time.monotonic() - t0
        tally[resp.status_code] += 1
        what = f"{case.method} {case.path} {case.body!r:.300}"
        assert resp.status_code < 500, f"{what} -> {resp.status_code} {resp.text[:300]}"
        assert took < HANG_S
        if resp.status_code >= 400:  # every refusal in OpenAI's error shape
            err = resp.json()["error"]
            assert err["code"] == resp.status_code and err["message"]

    run()


@pytest.mark.slow
def test_schema_driven_fuzz_never_answers_5xx_or_hangs(fuzz_server):
    schema = schemathesis.openapi.from_url(fuzz_server + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    labels = {f"{op.method.upper()} {op.path}" for op in operations}
    assert {"POST /v1/completions", "POST /v1/chat/completions", "GET /v1/models"} <= labels
    tally: Counter = Counter()
    per_op: dict[str, int] = {}
    t0 = time.monotonic()
    with requests.Session() as session:
        for op in operations:
            before = sum(tally.values())
            for mode in schemathesis.GenerationMode:
                if mode is schemathesis.GenerationMode.NEGATIVE and not op.path.startswith("/v1/c"):
                    continue  # only the completion bodies have a schema to violate
                _fuzz(fuzz_server, op, mode, tally, session)
            per_op[f"{op.method.upper()} {op.path}"] = sum(tally.values()) - before
    took = time.monotonic() - t0
    bad = sum(n for s, n in tally.items() if s >= 400)
    print(f"\nfuzz: {sum(tally.values())} requests in {took:.1f}s over {len(operations)} operations; "
          f"statuses {dict(sorted(tally.items()))}; {bad} refused cleanly, "
          f"{sum(n for s, n in tally.items() if s >= 500)} 5xx, 0 hangs")
    print("  per operation: " + ", ".join(f"{k} {v}" for k, v in sorted(per_op.items())))
    assert per_op["POST /v1/completions"] >= EXAMPLES and bad > 0
