"""The OpenAI API of `llmplan serve` over real HTTP, against the real torch engine (llama-tiny)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from server_harness import metric, running_server, wait_until

MODEL = "llama-tiny"
USER_HI = {"role": "user", "content": "hi"}


def _sse_objects(lines):
    out, done = [], False
    for line in lines:
        if line.startswith("data: "):
            payload = line[6:]
            if payload == "[DONE]":
                done = True
            else:
                out.append(json.loads(payload))
    return out, done


def test_openai_client_streams_completion_and_chat(server):
    client = openai.OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [MODEL]

    stream = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True,
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in chunks)

    full = client.completions.create(
        model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0,
        extra_body={"ignore_eos": True},
    )
    # Greedy decoding: the stream and the one-shot answer carry the same tokens.
    assert full.choices[0].text == streamed
    assert full.usage.completion_tokens == 8
    assert full.usage.total_tokens == full.usage.prompt_tokens + 8

    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens == 4

    parts = list(client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
    ))
    assert parts[0].choices[0].delta.role == "assistant"
    streamed_chat = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert streamed_chat == chat.choices[0].message.content
    assert parts[-1].choices == [] and parts[-1].usage.completion_tokens == 4


def test_sse_wire_format_and_usage_on_every_chunk(server):
    body = {"model": MODEL, "prompt": [500, 600, 700], "max_tokens": 5, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    objs, done = _sse_objects(raw.split("\n"))
    assert done
    counts = [o["usage"]["completion_tokens"] for o in objs]
    assert counts == sorted(counts) and counts[-1] == 5
    assert all(o["usage"]["prompt_tokens"] == 3 for o in objs)  # token-id prompts are taken as they are


def test_seeded_sampling_is_reproducible(server):
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 12, "temperature": 1.0, "seed": 7,
            "ignore_eos": True}
    a = httpx.post(server + "/v1/completions", json=body, timeout=30).json()
    b = httpx.post(server + "/v1/completions", json=body, timeout=30).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


@pytest.mark.parametrize(
    ("path", "body", "param", "fragment"),
    [
        ("/v1/completions", b'{"prompt": "hi", "max_tokens": 4', None, "malformed JSON"),
        ("/v1/completions", b'["not", "an", "object"]', None, "JSON object"),
        ("/v1/completions", {"max_tokens": 4}, "prompt", "required"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": "lots"}, "max_tokens", "integer"),
        ("/v1/completions", {"prompt": "hi", "temperature": 3}, "temperature", "less than or equal to 2"),
        ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p", "greater than 0"),
        ("/v1/completions", {"prompt": "hi", "n": 2}, "n", "must be 1"),
        ("/v1/completions", {"prompt": "hi", "stop": 5}, "stop", "string"),
        ("/v1/completions", {"prompt": "hi", "presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ("/v1/completions", {"prompt": "hi", "logit_bias": {"50": 10}}, "logit_bias", "not supported"),
        ("/v1/completions", {"prompt": "hi", "logprobs": 2}, "logprobs", "not supported"),
        ("/v1/completions", {"prompt": ""}, "prompt", "empty"),
        ("/v1/completions", {"prompt": ["a", "b"]}, "prompt", "batched prompts"),
        ("/v1/completions", {"prompt": [1, -2]}, "prompt", "negative"),
        ("/v1/completions", {"prompt": [1, 32000]}, "prompt", "vocabulary"),
        ("/v1/completions", {"prompt": [100] * 2048}, "prompt", "context is 2048"),
        ("/v1/completions", {"prompt": [100] * 2000, "max_tokens": 100}, "max_tokens", "at most 48"),
        ("/v1/chat/completions", {"messages": []}, "messages", "at least 1"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]},
         "messages[0].role", "user"),
        ("/v1/chat/completions", {"messages": [USER_HI], "max_completion_tokens": 4096},
         "max_completion_tokens", "context length is 2048"),
    ],
)
def test_bad_input_is_400_naming_the_field(server, path, body, param, fragment):
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body}
    r = httpx.post(server + path, timeout=30, **kwargs)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == 400
    assert err["param"] == param
    assert fragment in err["message"]


def test_curl_style_form_content_type_still_parses(server):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded; vLLM users expect it to work.
    r = httpx.post(server + "/v1/completions", content=json.dumps({"prompt": "hi", "max_tokens": 2}),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_nulls_and_neutral_values_mean_defaults(server):
    # Some SDKs send JSON null for unset fields, and zero penalties; neither changes the answer.
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "temperature": None, "top_p": None, "n": None,
            "stop": None, "stream": None, "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {},
            "user": "someone"}
    r = httpx.post(server + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1


def test_unknown_model_is_404(server):
    r = httpx.post(server + "/v1/completions", json={"model": "gpt-9", "prompt": "hi"}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


def test_client_disconnect_mid_stream_aborts_and_frees_kv_blocks(server, tiny_engine):
    aborts0 = _outcome(server, "abort")
    body = {"model": MODEL, "prompt": [300] * 40, "max_tokens": 1500, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        got = 0
        for line in lines:
            got += line.startswith("data: ")
            if got == 3:
                break
        assert tiny_engine.stats().kv_blocks_used > 0
        assert metric(server, "llmplan_kv_blocks_used") > 0
    # The connection is closed here, long before 1500 tokens.
    wait_until(lambda: tiny_engine.stats().kv_blocks_used == 0 and tiny_engine.stats().running == 0,
               what="the aborted request's KV blocks to be freed")
    assert metric(server, "llmplan_kv_blocks_used") == 0
    wait_until(lambda: _outcome(server, "abort") == aborts0 + 1, what="the abort to be counted")


def test_client_disconnect_while_waiting_for_non_streamed_answer(server, tiny_engine):
    body = {"model": MODEL, "prompt": [300] * 40, "max_tokens": 1500, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server + "/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    wait_until(lambda: tiny_engine.stats().kv_blocks_used == 0 and tiny_engine.stats().running == 0,
               what="the abandoned request's KV blocks to be freed")


@pytest.mark.slow
def test_metrics_histograms_and_engine_gauges(server, tiny_engine):
    n0 = metric(server, "llmplan_e2e_seconds_count")
    gen0 = metric(server, "llmplan_generation_tokens_total")
    for _ in range(3):
        r = httpx.post(server + "/v1/completions",
                       json={"prompt": [400] * 10, "max_tokens": 6, "ignore_eos": True}, timeout=30)
        assert r.status_code == 200
    assert metric(server, "llmplan_e2e_seconds_count") == n0 + 3
    assert metric(server, "llmplan_ttft_seconds_count") >= 3
    assert metric(server, "llmplan_tpot_seconds_count") >= 3
    assert metric(server, "llmplan_generation_tokens_total") == gen0 + 18
    assert metric(server, "llmplan_kv_blocks_total") == tiny_engine.stats().kv_blocks_total == 256
    for name in ("llmplan_requests_waiting", "llmplan_requests_running", "llmplan_kv_usage_ratio",
                 "llmplan_preemptions_total", "llmplan_predictor_accuracy_ratio"):
        metric(server, name)  # present (raises KeyError otherwise)
    # Latency buckets are cumulative: +Inf holds every observation.
    inf = metric(server, "llmplan_ttft_seconds_bucket", le="+Inf")
    assert inf == metric(server, "llmplan_ttft_seconds_count")


def test_health_and_models(server):
    h = httpx.get(server + "/health", timeout=10)
    assert h.status_code == 200 and h.json()["status"] == "ok"
    m = httpx.get(server + "/v1/models", timeout=10).json()["data"][0]
    assert m["id"] == MODEL and m["max_model_len"] == 2048 and m["vocab_size"] == 32000


@pytest.mark.slow
def test_queue_full_is_429_with_retry_after():
    from llmplan.runtime.factory import build_engine

    # One running slot and one waiting slot: the third request has nowhere to go.
    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=1, num_kv_blocks=64, max_queue=1)
    long = {"model": MODEL, "prompt": [300] * 8, "max_tokens": 900, "ignore_eos": True}

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            async with c.stream("POST", url + "/v1/completions", json={**long, "stream": True}) as a:
                a_lines = a.aiter_lines()  # keep a reference: a collected iterator closes A's connection
                await anext(a_lines)  # A is running
                b = asyncio.create_task(c.post(url + "/v1/completions", json=long))  # B queues behind A
                try:
                    await _until(lambda: engine.stats().waiting == 1)
                    r = await c.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2})
                    assert r.status_code == 429
                    assert int(r.headers["Retry-After"]) >= 1
                    err = r.json()["error"]
                    assert err["type"] == "rate_limit_error" and "queue is full" in err["message"]
                finally:
                    b.cancel()  # B's client leaves while queued; A's when the block exits

    with running_server(engine) as url:
        asyncio.run(scenario(url))
        assert metric(url, "llmplan_requests_total", outcome="rejected_429") == 1
        wait_until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().waiting == 0
                   and engine.stats().running == 0, what="A and B to be aborted")
        assert metric(url, "llmplan_requests_total", outcome="abort") == 2


async def _until(cond, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def _outcome(url: str, outcome: str) -> float:
    try:
        return metric(url, "llmplan_requests_total", outcome=outcome)
    except KeyError:
        return 0.0


@pytest.mark.slow
def test_predictor_accuracy_is_exported():
    from llmplan.predict.oracle import parse_predictor
    from llmplan.runtime.factory import build_engine

    # With ignore_eos the output length is max_tokens, so the oracle is always right and a
    # noisy oracle of accuracy 0 always wrong: both must show in the gauge.
    for spec, want in (("oracle", 1.0), ("noisy:0.0", 0.0)):
        engine = build_engine(dummy_weights="llama-tiny", scheduler="sjf", predictor=parse_predictor(spec),
                              num_kv_blocks=64, max_num_seqs=4)
        with running_server(engine) as url:
            for n in (3, 12, 40):  # three different length buckets
                r = httpx.post(url + "/v1/completions",
                               json={"prompt": [400] * 6, "max_tokens": n, "ignore_eos": True}, timeout=60)
                assert r.status_code == 200
            assert metric(url, "llmplan_predictor_total") == 3
            assert metric(url, "llmplan_predictor_accuracy_ratio") == want
