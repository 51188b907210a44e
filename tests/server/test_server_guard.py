"""API key, admin switch, request size and connection clocks of `llmplan serve`, over real
sockets against real uvicorn and the real llama-tiny engine."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import openai
import pytest
from server_harness import running_server

from llmplan.runtime.server.guard import GuardConfig

KEY = "sk-test-0123456789"


@pytest.fixture(scope="module")
def engine_factory():
    from llmplan.runtime.factory import build_engine

    return lambda: build_engine(dummy_weights="llama-tiny", max_num_seqs=8, num_kv_blocks=128, max_queue=64)


@pytest.fixture(scope="module")
def keyed(engine_factory):
    guard = GuardConfig(api_key=KEY, max_body_bytes=1 << 20, body_timeout_s=1.0, header_timeout_s=0.5)
    with running_server(engine_factory(), guard=guard) as url:
        yield url


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers", [
    {}, _auth("wrong"), {"Authorization": KEY}, {"Authorization": f"Basic {KEY}"}, _auth(KEY + "x"),
    {"Authorization": "Bearer"}, {"Authorization": f"Bearer  {KEY}x"},
])
def test_v1_needs_the_key_and_answers_401_in_openai_shape(keyed, headers):
    calls = (("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions"))
    for method, path in calls:
        r = httpx.request(method, keyed + path, headers=headers, json={"prompt": "hi"}, timeout=10)
        assert r.status_code == 401, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == 401 and err["type"] == "authentication_error" and "API key" in err["message"]
        assert r.headers["www-authenticate"] == "Bearer"


def test_the_key_opens_v1_and_health_metrics_stay_open(keyed):
    client = openai.OpenAI(base_url=keyed + "/v1", api_key=KEY, max_retries=0)
    out = client.completions.create(model="llama-tiny", prompt="Hello", max_tokens=3)
    assert out.usage.completion_tokens >= 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed + "/v1", api_key="nope", max_retries=0).models.list()
    r = httpx.get(keyed + "/v1/models", headers={"Authorization": f"bearer {KEY}"}, timeout=10)
    assert r.status_code == 200, "the scheme is case-insensitive"
    assert httpx.get(keyed + "/health", timeout=10).status_code == 200
    assert httpx.get(keyed + "/metrics", timeout=10).status_code == 200


def test_admin_is_off_unless_enabled(keyed):
    for headers in ({}, _auth()):
        r = httpx.get(keyed + "/admin/workers", headers=headers, timeout=10)
        assert r.status_code == 404 and "--enable-admin" in r.json()["error"]["message"]


@pytest.mark.slow
def test_protected_metrics_and_enabled_admin_need_the_key(engine_factory):
    guard = GuardConfig(api_key=KEY, protect_metrics=True, enable_admin=True)
    with running_server(engine_factory(), guard=guard) as url:
        assert httpx.get(url + "/metrics", timeout=10).status_code == 401
        assert httpx.get(url + "/metrics", headers=_auth(), timeout=10).status_code == 200
        assert httpx.post(url + "/admin/migrate", json={}, timeout=10).status_code == 401
        # With the key the request reaches the admin endpoint, which finds nothing to move here.
        r = httpx.post(url + "/admin/migrate", json={"layers": [1], "src": 0, "dst": 1}, headers=_auth(),
                       timeout=10)
        assert r.status_code == 409 and "one worker" in r.text, r.text
        assert httpx.get(url + "/health", timeout=10).status_code == 200


def test_an_oversized_body_is_413_before_it_is_read(keyed):
    big = json.dumps({"prompt": "x" * (2 << 20)}).encode()
    r = httpx.post(keyed + "/v1/completions", content=big, headers=_auth(), timeout=30)
    assert r.status_code == 413
    assert "1 MiB" in r.json()["error"]["message"] and r.json()["error"]["code"] == 413

    def chunks():  # no Content-Length: the limit is counted as the body arrives
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(keyed + "/v1/completions", content=chunks(), headers=_auth(), timeout=30)
    assert r.status_code == 413
    ok = httpx.post(keyed + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, headers=_auth(),
                    timeout=30)
    assert ok.status_code == 200, "the server serves on after refusing"


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed ``s`` within ``seconds`` (and what it sent before)."""
    s.settimeout(seconds)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
        return True, data
    except TimeoutError:
        return False, data
    except ConnectionResetError:
        return True, data


def test_slow_and_half_open_clients_are_cut_off(keyed):
    # 20 connections that never send a byte, 20 that stop in the middle of their headers,
    # 5 that declare a body and never finish it: all closed (the last with a 408) within seconds.
    silent = [_raw(keyed) for _ in range(20)]
    partial = [_raw(keyed) for _ in range(20)]
    for s in partial:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode())
    slow_body = [_raw(keyed) for _ in range(5)]
    for s in slow_body:
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
    t0 = time.monotonic()
    results = [_closed_within(s, 10) for s in silent + partial + slow_body]
    took = time.monotonic() - t0
    assert all(closed for closed, _ in results), f"{sum(not c for c, _ in results)} connections still open"
    for _, data in results[40:]:
        assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert took < 10
    for s in silent + partial + slow_body:
        s.close()
    # A well-behaved client on a kept-alive connection is not affected.
    with httpx.Client(base_url=keyed, headers=_auth(), timeout=30) as c:
        for _ in range(3):
            assert c.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2}).status_code == 200


@pytest.mark.slow
def test_a_huge_prompt_is_tokenized_off_the_event_loop(engine_factory):
    """A stream keeps flowing while a ~2 MB prompt is tokenized and then rejected (too long)."""
    with running_server(engine_factory()) as url:
        gaps: list[tuple[float, float]] = []  # (time, gap since the previous chunk)
        started = threading.Event()

        def stream() -> None:
            body = {"prompt": [300, 301], "max_tokens": 2000, "stream": True, "ignore_eos": True}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
                last = time.monotonic()
                for line in r.iter_lines():
                    now = time.monotonic()
                    if line.startswith("data: {"):
                        gaps.append((now, now - last))
                        last = now
                        started.set()

        t = threading.Thread(target=stream)
        t.start()
        assert started.wait(60)
        prompt = "the quick brown fox jumps over the lazy dog. " * 45000  # ~2 MB
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 1}, timeout=120)
        t1 = time.monotonic()
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        t.join(120)
        during = [g for when, g in gaps if t0 <= when <= t1 + 0.5]
        print(f"\nrejecting the 2 MB prompt took {t1 - t0:.2f}s; {len(during)} stream chunks meanwhile, "
              f"longest gap {max(during, default=float('nan')):.3f}s")
        # On the event loop the stream would stop for the whole tokenization.
        assert during and max(during) < 0.5 * (t1 - t0)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--api-key", "  "], "--api-key is empty"),
    (["--protect-metrics"], "--protect-metrics needs --api-key"),
    (["--max-request-mb", "nan"], "--max-request-mb must be in (0, 1024]"),
    (["--max-request-mb", "0"], "--max-request-mb must be in (0, 1024]"),
    (["--host", "0.0.0.0", "--enable-admin"], "without --api-key"),
])
def test_bad_guard_flags_are_one_line_errors(monkeypatch, capsys, args, fragment):
    import sys

    from llmplan.cli.app import main

    monkeypatch.delenv("LLMPLAN_API_KEY", raising=False)
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setattr(sys, "argv", ["llmplan", "serve", "--dummy-weights", "llama-tiny", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
