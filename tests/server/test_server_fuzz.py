"""A standing schema-driven fuzz of `llmplan serve`'s HTTP API (schemathesis over the server's
own OpenAPI document): every operation gets schema-valid and schema-violating requests; none
may answer 5xx or hang. Real uvicorn on 127.0.0.1, real llama-tiny engine (dummy weights).

Derandomized and bounded for CI (``LLMPLAN_FUZZ_EXAMPLES`` per operation and mode, default 25);
raise it to search longer. The counts are printed with ``pytest -s``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import running_server

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = int(os.environ.get("LLMPLAN_FUZZ_EXAMPLES", "25"))
HANG_S = 30.0  # no single answer may take longer (the context is 64 tokens: generation is short)


@pytest.fixture(scope="module")
def fuzz_server():
    from llmplan.runtime.factory import build_engine

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


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30,
)
# Bodies from raw bytes to near-valid requests: fields the API knows, with any JSON value.
_FIELDS = ["prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "n",
           "stop", "stream", "stream_options", "seed", "logprobs", "ignore_eos", "slo_e2e_s", "model"]
_CTYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
_bodies = st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(_FIELDS), _json, max_size=6).map(lambda d: json.dumps(d).encode()),
)


@pytest.mark.slow
def test_raw_body_fuzz_is_always_a_clean_answer(fuzz_server):
    """Bytes and JSON of any shape (NaN included) to both POST endpoints, with any content type."""
    tally: Counter = Counter()
    with requests.Session() as session:

        @settings(max_examples=4 * EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(body=_bodies, chat=st.booleans(), ctype=st.sampled_from(_CTYPES))
        def run(body: bytes, chat: bool, ctype: str) -> None:
            path = "/v1/chat/completions" if chat else "/v1/completions"
            r = session.post(fuzz_server + path, data=body, headers={"Content-Type": ctype} if ctype else {},
                             timeout=HANG_S)
            tally[r.status_code] += 1
            assert r.status_code < 500, f"{body[:200]!r} -> {r.status_code} {r.text[:200]}"
            if r.status_code >= 400:
                assert r.json()["error"]["code"] == r.status_code

        run()
    print(f"\nraw fuzz: {sum(tally.values())} requests; statuses {dict(sorted(tally.items()))}")
