"""Built-in P/D disaggregation through the global KV store, over real `llmplan serve` processes.

One prefill and one decode instance (llama-tiny, dummy weights) share a store directory; the
front end runs each prompt on the prefill instance with max_tokens=1, then the full request on
the decode instance, which must find the prompt's full blocks in the store. The reference is a
single colocated `llmplan serve` without a store: greedy output must match it token for token.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from server_harness import serving_app, wait_healthy

from llmplan.errors import LlmplanError
from llmplan.frontend.deploy import DeployConfig, builtin_specs, serve_deployment
from llmplan.frontend.pd import parse_pd

# Real multi-process deployments: the module fixture alone starts several engine processes.
pytestmark = pytest.mark.slow

BLOCK = 16
ENGINE_ARGS = ["--threads", "1", "--num-kv-blocks", "256", "--block-size", str(BLOCK), "--seed", "0"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pd_deployment(tmp_path_factory):
    """(front-end url, supervisor, reference url). The reference starts beside the deployment."""
    tmp = tmp_path_factory.mktemp("pd")
    ref_port = _port()
    ref_log = open(tmp / "reference.log", "wb")  # noqa: SIM115 - closed at teardown
    ref = subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny",
         "--port", str(ref_port), *ENGINE_ARGS],
        stdout=ref_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    specs = builtin_specs(
        2, host="127.0.0.1", base_port=_port(), dummy_weights="llama-tiny", model=None,
        extra_args=ENGINE_ARGS, pd=(1, 1), kv_store=str(tmp / "store"), ports=[_port(), _port()],
    )  # fmt: skip
    assert [(s.name, s.role) for s in specs] == [("prefill0", "prefill"), ("decode0", "decode")]
    cfg = DeployConfig(
        port=_port(), log_dir=tmp / "logs", health_timeout_s=180, max_restarts=0, pd_handoff="store",
        no_backend_timeout_s=1.0,
    )  # fmt: skip
    ready: dict = {}
    stop = threading.Event()
    thread = threading.Thread(
        target=lambda: asyncio.run(
            serve_deployment(specs, cfg, ready=lambda url, sup, fe: ready.update(url=url, sup=sup), stop=stop)
        ),
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + 240
        while "url" not in ready:
            assert thread.is_alive(), f"deployment died during start-up; logs in {tmp / 'logs'}"
            assert time.monotonic() < deadline, "deployment did not become ready"
            time.sleep(0.1)
        ref_url = f"http://127.0.0.1:{ref_port}"
        wait_healthy(ref_url, ref, timeout_s=180, what="reference server")
        yield ready["url"], ready["sup"], ref_url
    finally:
        stop.set()
        thread.join(timeout=60)
        os.killpg(ref.pid, signal.SIGTERM)
        ref.wait(timeout=60)
        ref_log.close()


def _prompt(n: int, seed: int) -> list[int]:
    # Token ids from the middle of the vocabulary; a fresh seed per test keeps the store cold
    # for this prompt, so every hit on the decode side came from this request's prefill hop.
    return np.random.default_rng(seed).integers(3000, 16000, size=n).tolist()


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _decode_url(sup) -> str:
    return sup.instances["decode0"].spec.url


def test_completion_matches_colocated_and_decode_loads_full_blocks_from_store(pd_deployment):
    url, sup, ref = pd_deployment
    for n, seed in ((37, 1), (48, 2)):  # a partial tail block, and an exact multiple of the block
        body = {"prompt": _prompt(n, seed), "max_tokens": 12, "temperature": 0, "ignore_eos": True}
        before = httpx.get(_decode_url(sup) + "/metrics").text
        got = httpx.post(url + "/v1/completions", json=body, timeout=120)
        want = httpx.post(ref + "/v1/completions", json=body, timeout=120)
        assert got.status_code == 200, got.text
        assert got.json()["choices"][0]["text"] == want.json()["choices"][0]["text"]
        assert got.json()["usage"] == want.json()["usage"]
        after = httpx.get(_decode_url(sup) + "/metrics").text
        # Every full block before the last prompt token came from the store; the decode
        # instance computed only the rest (fewer than a block for n=37, one block for n=48).
        full = (n - 1) // BLOCK
        hit = _metric(after, "llmplan_kvstore_hit_blocks_total") - _metric(
            before, "llmplan_kvstore_hit_blocks_total"
        )
        computed = _metric(after, "llmplan_kvstore_miss_tokens_total") - _metric(
            before, "llmplan_kvstore_miss_tokens_total"
        )
        assert hit == full, (n, hit)
        assert computed == n - full * BLOCK, (n, computed)
    fe = httpx.get(url + "/metrics").text
    assert _metric(fe, "llmplan_frontend_pd_handoffs_total", '{decode="decode0",prefill="prefill0"}') >= 2


def test_streaming_and_chat_match_colocated(pd_deployment):
    import openai

    url, sup, ref = pd_deployment
    client = openai.OpenAI(base_url=url + "/v1", api_key="none")
    reference = openai.OpenAI(base_url=ref + "/v1", api_key="none")
    prompt = "The store hands the prefill's blocks to the decode instance " * 3
    stream = client.completions.create(
        model="llama-tiny", prompt=prompt, max_tokens=10, stream=True, temperature=0,
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    streamed = "".join(c.choices[0].text for c in stream if c.choices)
    want = reference.completions.create(
        model="llama-tiny", prompt=prompt, max_tokens=10, temperature=0, extra_body={"ignore_eos": True}
    )
    assert streamed == want.choices[0].text and streamed
    messages = [{"role": "user", "content": "Split prefill from decode, " * 4}]
    chat = client.chat.completions.create(model="llama-tiny", messages=messages, max_tokens=8, temperature=0)
    chat_ref = reference.chat.completions.create(
        model="llama-tiny", messages=messages, max_tokens=8, temperature=0
    )
    assert chat.choices[0].message.content == chat_ref.choices[0].message.content


def test_killed_decode_instance_is_a_clear_counted_failure(pd_deployment):
    url, sup, _ = pd_deployment
    decode = sup.instances["decode0"]
    body = {
        "prompt": _prompt(20, 3),
        "max_tokens": 1800,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    events: list[str] = []
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 2:  # tokens are flowing from the decode instance: kill it
                os.killpg(decode.proc.pid, signal.SIGKILL)
    errors = [json.loads(e)["error"] for e in events if e.startswith("{") and '"error"' in e]
    assert len(errors) == 1, events[-3:]
    assert "decode hop failed on decode0" in errors[0]["message"] and errors[0]["code"] == 502
    assert events[-1] == "[DONE]"
    fe = httpx.get(url + "/metrics").text
    assert _metric(fe, "llmplan_frontend_pd_failures_total", '{backend="decode0",hop="decode"}') == 1
    assert _metric(fe, "llmplan_frontend_requests_total", '{outcome="failed"}') == 1
    # With the decode instance gone, a new request is refused with the reason, not dropped.
    r = httpx.post(url + "/v1/completions", json={"prompt": _prompt(20, 4), "max_tokens": 2}, timeout=30)
    assert r.status_code == 503
    assert "no healthy decode instance" in r.json()["error"]["message"]
    fe = httpx.get(url + "/metrics").text
    assert _metric(fe, "llmplan_frontend_requests_total", '{outcome="failed"}') == 2


@pytest.mark.parametrize(
    ("text", "instances", "match"),
    [
        ("3:1", 2, "asks for 4 instances but --instances is 2"),
        ("0:1", 1, "at least one prefill and one decode"),
        ("1-1", 2, "PREFILL:DECODE"),
    ],
)
def test_bad_pd_split_is_one_line_error(text, instances, match):
    with pytest.raises(LlmplanError, match=match):
        parse_pd(text, instances)


def test_bad_pd_on_the_command_line_exits_with_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny",
         "--instances", "2", "--pd", "3:1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "--pd 3:1" in err and "--instances" in err


def test_failed_prefill_hop_is_a_clear_counted_error(stub_argv, free_port):
    """A prefill instance that answers 500: the client gets 502 naming the hop; counted."""
    from llmplan.frontend.backends import Backend, BackendPool
    from llmplan.frontend.pd import StoreHandoff
    from llmplan.frontend.proxy import Frontend, build_app
    from llmplan.routing import get_router

    # The stub exits while handling its first request: a prefill instance dying mid-hop.
    pre, dec = free_port(), free_port()
    procs = [subprocess.Popen(stub_argv(pre, "--crash-after", "1")), subprocess.Popen(stub_argv(dec))]
    try:
        for p in (pre, dec):
            wait_healthy(f"http://127.0.0.1:{p}", timeout_s=15, what="stub backend")
        pool = BackendPool(
            [
                Backend(
                    "prefill0",
                    f"http://127.0.0.1:{pre}",
                    role="prefill",
                    decode_url=f"http://127.0.0.1:{dec}",
                ),
                Backend("decode0", f"http://127.0.0.1:{dec}", role="decode"),
            ],
            get_router("round-robin"),
        )
        fe = Frontend(pool, max_retries=0, handoff=StoreHandoff())
        with serving_app(build_app(fe), what="front end") as fe_url:
            r = httpx.post(fe_url + "/v1/completions", json={"prompt": "x"}, timeout=20)
            metrics = httpx.get(fe_url + "/metrics").text
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert r.status_code == 502
    assert "P/D prefill hop failed on prefill0" in r.json()["error"]["message"]
    assert _metric(metrics, "llmplan_frontend_pd_failures_total", '{backend="prefill0",hop="prefill"}') == 1
    assert (
        _metric(metrics, "llmplan_frontend_pd_handoffs_total", '{decode="decode0",prefill="prefill0"}') == 0
    )


def test_live_systems_deploy_what_they_claim(tmp_path):
    """The live comparison's three deployments (llmplan.bench.systems): same engine flags, only
    router/P-D/store differ."""
    from llmplan.bench.live import LiveConfig, serve_argv

    argv = {s: serve_argv(s, LiveConfig(), 8000, 8001, tmp_path) for s in ("vllm", "distserve", "banaserve")}

    def opt(a: list[str], flag: str) -> str | None:
        return a[a.index(flag) + 1] if flag in a else None

    assert [opt(argv[s], "--router") for s in argv] == ["round-robin", "least-loaded", "banaserve"]
    assert [opt(argv[s], "--pd") for s in argv] == [None, "1:1", "1:1"]
    assert opt(argv["vllm"], "--kv-store") is None
    assert (
        opt(argv["distserve"], "--kv-store")
        == opt(argv["banaserve"], "--kv-store")
        == str(tmp_path / "store")
    )
    assert {opt(a, "--threads") for a in argv.values()} == {"1"}
    assert {opt(a, "--instances") for a in argv.values()} == {"2"}
    with pytest.raises(LlmplanError, match="unknown system"):
        serve_argv("sglang", LiveConfig(), 8000, 8001, tmp_path)


def test_scale_lengths_caps_and_keeps_arrivals():
    from llmplan.bench.live import scale_lengths
    from llmplan.workload.types import RequestSpec, Workload

    wl = Workload("w", [RequestSpec(rid=i, arrival_s=i * 0.5, prompt_tokens=p, output_tokens=o)
                        for i, (p, o) in enumerate([(1000, 300), (3, 1), (5000, 40)])])  # fmt: skip
    out = scale_lengths(wl, 0.5, 0.25, max_prompt=1024, max_output=64)
    assert [(r.prompt_tokens, r.output_tokens) for r in out.requests] == [(500, 64), (2, 1), (1024, 10)]
    assert [r.arrival_s for r in out.requests] == [0.0, 0.5, 1.0]
    assert [r.prompt_tokens for r in wl.requests] == [1000, 3, 5000]  # the input is not modified
    with pytest.raises(LlmplanError, match="positive"):
        scale_lengths(wl, 0, 1)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "--compare vllm,distserve,banaserve --live"),
        (["--compare", "vllm,distserve", "--instances", "4"], "drop --instances"),
    ],
)
def test_bench_live_refuses_what_it_cannot_deploy(extra, message):
    r = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "bench", "--trace", "synthetic:n=5", "--live", *extra],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_dead_paired_decode_fails_over_to_another_decode(stub_argv, free_port):
    """1 prefill + 2 decode stubs; the paired decode dies on its first request: the retry hands
    off to the other one (any decode instance can read the store); the failure is counted."""

    from llmplan.frontend.backends import Backend, BackendPool
    from llmplan.frontend.pd import StoreHandoff
    from llmplan.frontend.proxy import Frontend, build_app
    from llmplan.routing import get_router

    pre, dead, alive = free_port(), free_port(), free_port()
    procs = [
        subprocess.Popen(stub_argv(pre, "--name", "pre")),
        subprocess.Popen(stub_argv(dead, "--name", "d0", "--crash-after", "1")),
        subprocess.Popen(stub_argv(alive, "--name", "d1")),
    ]
    try:
        for p in (pre, dead, alive):
            wait_healthy(f"http://127.0.0.1:{p}", timeout_s=15, what="stub backend")
        url = "http://127.0.0.1:{}".format
        pool = BackendPool(
            [
                Backend("prefill0", url(pre), role="prefill", decode_url=url(dead)),
                Backend("decode0", url(dead), role="decode"),  # healthy until its first request
                Backend("decode1", url(alive), role="decode"),
            ],
            get_router("round-robin"),
            health_interval_s=3600,  # only the request itself finds out that decode0 died
        )
        fe = Frontend(pool, max_retries=1, handoff=StoreHandoff())
        with serving_app(build_app(fe), what="front end") as fe_url:
            r = httpx.post(fe_url + "/v1/completions", json={"prompt": "x", "max_tokens": 3})
            metrics = httpx.get(fe_url + "/metrics").text
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert r.status_code == 200 and r.json()["backend"] == "d1", r.text
    assert r.json()["received_kv"] is None  # the store hand-off passes nothing between the hops
    assert _metric(metrics, "llmplan_frontend_pd_failures_total", '{backend="decode0",hop="decode"}') == 1
    assert (
        _metric(metrics, "llmplan_frontend_pd_handoffs_total", '{decode="decode1",prefill="prefill0"}') == 1
    )
    assert _metric(metrics, "llmplan_frontend_retries_total") == 1
