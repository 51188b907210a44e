"""One OpenAI error envelope: the front end answers each status exactly as the server does.

Both build it with llmplan.runtime.server.errors; these tests go over real HTTP (uvicorn on
127.0.0.1) to the front end and compare what comes back with the server's envelope.
"""

from __future__ import annotations

import json

import httpx
import pytest

from llmplan.frontend.proxy import Frontend
from llmplan.runtime.server.errors import error_body, error_type, sse_error
from tests.frontend.test_frontend_proxy import _frontend, backends, serve_frontend

# The one `type` per status (OpenAI's names; a 429 was "rate_limit" in the front end's streams).
EXPECTED = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    409: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
}


@pytest.mark.parametrize("status", sorted(EXPECTED))
def test_one_type_per_status_in_bodies_and_streams(status):
    assert error_type(status) == EXPECTED[status]
    event = sse_error(status, "why")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[len(b"data: "):]) == error_body(status, "why")


def test_front_end_errors_match_the_server_envelope(stub_argv, free_port):
    with backends(stub_argv, free_port, ()) as urls:
        fe: Frontend = _frontend(urls)
        with serve_frontend(fe, free_port()) as url:
            bad_json = httpx.post(url + "/v1/completions", content=b"{not json",
                                  headers={"Content-Type": "application/json"}, timeout=10)
            bad_field = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": -1},
                                   timeout=10)
            fe.pool.backends[0].url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
            no_deployment = httpx.get(url + "/v1/deployment", timeout=10)
    cases = ((bad_json, 400, "body"), (bad_field, 400, "max_tokens"), (no_deployment, 503, None))
    for r, status, param in cases:
        assert r.status_code == status
        body = r.json()
        assert body == error_body(status, body["error"]["message"], param)
        assert body["error"]["type"] == EXPECTED[status]
