"""`llmplan serve --workers 2`: the serving core over two worker processes, live layer migration.

Greedy outputs are compared with a single-process engine of the same weights (seed): a wrong
stage hand-off, a layer run twice or skipped, or KV left behind by a migration changes the text.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_harness import metric, running_server, wait_until

from llmplan.runtime.server.guard import GuardConfig

pytestmark = pytest.mark.slow

_rng = random.Random(7)
PROMPTS = [[_rng.randrange(3, 32000) for _ in range(n)] for n in (5, 23, 40, 9, 17, 64)]
MAX_TOKENS = 24


def _complete(url: str, prompt: list[int], max_tokens: int = MAX_TOKENS) -> str:
    r = httpx.post(url + "/v1/completions", timeout=120, json={
        "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == max_tokens
    return r.json()["choices"][0]["text"]


def _stream(url: str, prompt: list[int], started: threading.Event) -> str:
    pieces = []
    body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        import json

        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                pieces.append(json.loads(line[6:])["choices"][0]["text"])
                if len(pieces) >= 3:
                    started.set()
    return "".join(pieces)


def _load_until(url: str, done, what: str, clients: int) -> None:
    """Closed-loop load from ``clients`` threads until ``done()`` (the controller has acted)."""
    stop = threading.Event()

    def load():
        while not stop.is_set():
            _complete(url, PROMPTS[1], 8)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        wait_until(done, timeout_s=60, what=what)
    finally:
        stop.set()
        for t in threads:
            t.join(60)


def _while_streaming(url: str, calls: list[tuple[str, dict]]) -> tuple[list[str], list[dict]]:
    """Stream every prompt; once tokens flow, make the admin calls in order. Returns the
    streamed outputs and the calls' JSON replies."""
    started = threading.Event()
    replies = []
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        futs = [pool.submit(_stream, url, p, started) for p in PROMPTS]
        assert started.wait(60)
        for path, body in calls:
            r = httpx.post(url + path, json=body, timeout=60)
            assert r.status_code == 200, r.text
            replies.append(r.json())
        return [f.result() for f in futs], replies


def _all(url: str) -> list[str]:
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(lambda p: _complete(url, p), PROMPTS))


@pytest.fixture(scope="module")
def reference():
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=128, max_num_seqs=16)
    with running_server(engine) as url:
        return _all(url)


@pytest.fixture(scope="module")
def pipe():
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=128, max_num_seqs=16, workers=2)
    executor = engine.engine.executor
    assert executor.ranges == [(0, 2), (2, 4)]
    with running_server(engine, guard=GuardConfig(enable_admin=True)) as url:
        yield url, executor
    assert not any(_alive(pid) for pid in executor.worker_pids), "workers must stop with the server"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped) is not alive
        return f.read().split()[2] != "Z"


def test_two_workers_give_the_single_process_greedy_outputs(reference, pipe):
    url, _ = pipe
    assert _all(url) == reference
    assert metric(url, "llmplan_worker_layers", worker="0") == 2
    assert metric(url, "llmplan_worker_busy_seconds_total", worker="1") > 0


def test_admin_migration_while_requests_stream_keeps_outputs_identical(reference, pipe):
    url, executor = pipe
    # Rank 0's tail layer goes to worker 1 mid-stream, then worker 1's head comes back.
    outs, (first, _) = _while_streaming(url, [
        ("/admin/migrate", {"layers": [1], "src": 0, "dst": 1}),
        ("/admin/migrate", {"layers": [1], "src": 1, "dst": 0}),
    ])
    assert outs == reference
    assert first["layers"] == [[0, 1], [1, 4]]
    m = first["migration"]
    assert m["bytes"] > 0 and m["measured_s"] > 0 and m["estimate_s"] > 0 and m["trigger"] == "admin"
    assert executor.ranges == [(0, 2), (2, 4)]
    assert metric(url, "llmplan_layer_migrations_total", trigger="admin") == 2
    assert metric(url, "llmplan_layer_migration_seconds_total") == pytest.approx(
        sum(r.measured_s for r in executor.records))
    assert metric(url, "llmplan_layer_migration_last_estimate_seconds") > 0
    assert httpx.get(url + "/admin/workers").json()["layers"] == [[0, 2], [2, 4]]

    # An idle engine runs no step to pick the move up: the admin call runs it itself.
    r = httpx.post(url + "/admin/migrate", json={"layers": [2], "src": 1, "dst": 0}, timeout=60)
    assert r.status_code == 200 and r.json()["layers"] == [[0, 3], [3, 4]]
    assert _all(url) == reference
    r = httpx.post(url + "/admin/migrate", json={"layers": [2], "src": 0, "dst": 1}, timeout=60)
    assert r.status_code == 200 and executor.ranges == [(0, 2), (2, 4)]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"layers": [0], "src": 0, "dst": 1}, 409, "only boundary layers [1]"),
    ({"layers": [2, 3], "src": 1, "dst": 0}, 409, "cannot move 2 and keep one"),
    ({"layers": [1], "src": 0, "dst": 2}, 409, "does not exist"),
    ({"layers": [], "src": 0, "dst": 1}, 400, "non-empty list"),
    ({"layers": [1], "src": "0", "dst": 1}, 400, "'src'"),
])
def test_invalid_moves_are_clear_errors(pipe, body, status, words):
    url, executor = pipe
    r = httpx.post(url + "/admin/migrate", json=body, timeout=30)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]
    assert executor.ranges == [(0, 2), (2, 4)]


def test_admin_attention_offload_while_requests_stream_keeps_outputs_identical(reference, pipe):
    url, executor = pipe
    # Worker 0's layers hand one of their two KV heads (and its query group) to worker 1,
    # and worker 1's last layer one of its heads to worker 0, mid-stream.
    outs, (first, _) = _while_streaming(url, [
        ("/admin/offload", {"layers": [0, 1], "src": 0, "dst": 1, "kv_heads": 1}),
        ("/admin/offload", {"layers": [3], "src": 1, "dst": 0, "kv_heads": 1}),
    ])
    assert outs == reference
    assert first["offload"]["bytes"] > 0 and first["offload"]["kv_heads"] == 1
    workers = httpx.get(url + "/admin/workers").json()
    assert workers["offloads"] == [{"layer": 0, "owner": 0, "host": 1, "kv_heads": 1},
                                   {"layer": 1, "owner": 0, "host": 1, "kv_heads": 1},
                                   {"layer": 3, "owner": 1, "host": 0, "kv_heads": 1}]
    assert _all(url) == reference  # a fresh batch, every step served across both workers
    assert metric(url, "llmplan_attention_offloads_total", trigger="admin") == 2
    assert metric(url, "llmplan_worker_hosted_kv_heads", worker="1") == 2
    assert metric(url, "llmplan_attention_offload_bytes_total") == sum(
        r.bytes for r in executor.offload_records)
    # A layer with offloaded heads can still move: its heads come back first.
    r = httpx.post(url + "/admin/migrate", json={"layers": [1], "src": 0, "dst": 1}, timeout=60)
    assert r.status_code == 200 and [o["layer"] for o in _offloads(url)] == [0, 3]
    r = httpx.post(url + "/admin/restore", json={}, timeout=60)
    assert r.status_code == 200 and r.json()["restored"] == [0, 3] and r.json()["offloads"] == []
    r = httpx.post(url + "/admin/migrate", json={"layers": [1], "src": 1, "dst": 0}, timeout=60)
    assert r.status_code == 200 and executor.ranges == [(0, 2), (2, 4)]
    assert _all(url) == reference
    assert metric(url, "llmplan_attention_restores_total", trigger="admin") == 3


def _offloads(url: str) -> list[dict]:
    return httpx.get(url + "/admin/workers").json()["offloads"]


@pytest.mark.parametrize(("path", "body", "status", "words"), [
    ("/admin/offload", {"layers": [2], "src": 0, "dst": 1, "kv_heads": 1}, 409,
     "layer 2 is not on worker 0, which holds layers [0, 2)"),
    ("/admin/offload", {"layers": [1], "src": 0, "dst": 1, "kv_heads": 2}, 409, "kv_heads must be 1..1"),
    ("/admin/offload", {"layers": [1], "src": 0, "dst": 1}, 400, "'kv_heads' must be a number of KV heads"),
    ("/admin/offload", {"layers": "1", "src": 0, "dst": 1, "kv_heads": 1}, 400, "non-empty list"),
    ("/admin/restore", {"layers": []}, 400, "non-empty list"),
])
def test_invalid_offloads_are_clear_errors(pipe, path, body, status, words):
    url, executor = pipe
    r = httpx.post(url + path, json=body, timeout=30)
    assert r.status_code == status
    assert words in r.json()["error"]["message"]
    assert executor.offloads == {}


def test_a_dead_worker_is_a_clear_error_not_a_hang(pipe):
    url, executor = pipe
    [pid] = executor.worker_pids
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), what="the worker to die")
    r = httpx.post(url + "/v1/completions", json={"prompt": [300] * 8, "max_tokens": 4}, timeout=60)
    assert r.status_code == 500
    msg = r.json()["error"]["message"]
    assert "worker 1 (layers [2, 4)) exited with code" in msg and "restart the server" in msg
    # Later requests fail at once with the same diagnosis.
    r = httpx.post(url + "/v1/completions", json={"prompt": [300] * 8, "max_tokens": 4}, timeout=10)
    assert r.status_code == 500 and "worker 1" in r.json()["error"]["message"]
    h = httpx.get(url + "/health", timeout=10)
    assert h.status_code == 503 and h.json()["status"] == "failed" and "worker 1" in h.json()["error"]


def test_migration_controller_moves_a_layer_off_the_busy_worker(reference):
    """3,1 on llama-tiny: rank 0 also runs the LM head (32000 x 256, ~11 layers' worth of FLOPs),
    so worker 0 is the overloaded one; the controller moves its boundary layer 2 to worker 1."""
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=128, max_num_seqs=16, workers=2,
                          layer_split="3,1", migration_controller=True, control_interval_s=0.2,
                          worker_timeout_s=5)
    executor = engine.engine.executor
    with running_server(engine) as url:
        _load_until(url, lambda: executor.records, "a controller migration", clients=3)
        rec = executor.records[0]
        assert (rec.trigger, rec.layers, rec.src, rec.dst) == ("controller", (2,), 0, 1)
        assert executor.ranges[0] == (0, 2)
        assert _all(url) == reference
        assert metric(url, "llmplan_layer_migrations_total", trigger="controller") >= 1
        assert metric(url, "llmplan_migration_decisions_total", kind="layer", code="migrate") >= 1
        assert metric(url, "llmplan_worker_layers", worker="1") >= 2
        assert metric(url, "llmplan_migration_migration_seconds_total") > 0
        # The measured move calibrates the controller's next layer-move price.
        assert metric(url, "llmplan_migration_cost_ratio", kind="layer") > 0

        # A worker that stops answering (SIGSTOP: alive, silent) fails the step after the
        # worker timeout (5 s here) with a clear error instead of hanging the server.
        [pid] = executor.worker_pids
        os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            r = httpx.post(url + "/v1/completions", json={"prompt": [300] * 8, "max_tokens": 4}, timeout=60)
            assert r.status_code == 500 and time.monotonic() - t0 < 30
            assert "multi-worker instance failed" in r.json()["error"]["message"]
        finally:
            os.kill(pid, signal.SIGCONT)


def test_migration_controller_offloads_attention_off_a_memory_bound_worker(reference):
    """With 0.07 GiB per worker, worker 0 (layers + embedding + LM head, ~71 MB on llama-tiny) is
    memory-bound, so the controller picks attention migration: one of each of its layers' two KV
    heads goes to worker 1. Outputs stay identical."""
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=128, max_num_seqs=16, workers=2,
                          migration_controller=True, control_interval_s=0.2, worker_memory_gb=0.07)
    executor = engine.engine.executor
    with running_server(engine) as url:
        _load_until(url, lambda: executor.offload_records, "a controller offload", clients=2)
        rec = executor.offload_records[0]
        assert (rec.trigger, rec.layers, rec.src, rec.dst, rec.kv_heads) == ("controller", (0, 1), 0, 1, 1)
        assert not executor.records  # no layer moved: the overload is memory, not compute
        assert _all(url) == reference
        assert metric(url, "llmplan_attention_offloads_total", trigger="controller") == 1
        assert metric(url, "llmplan_migration_decisions_total", kind="attention", code="migrate") >= 1
        assert metric(url, "llmplan_worker_hosted_kv_heads", worker="1") == 2
        assert metric(url, "llmplan_migration_cost_ratio", kind="attention") > 0
