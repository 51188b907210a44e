"""Hostile or careless input to `llmplan serve` over real HTTP (llama-tiny, real uvicorn).

One bad request never fails another; sampling values that broke a whole step are refused or
handled; the limits on size and time hold.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

MODEL = "llama-tiny"


async def _complete(client: httpx.AsyncClient, body: dict) -> httpx.Response:
    return await client.post("/v1/completions", json=body, timeout=60)


@pytest.mark.parametrize("poison", [
    {"temperature": 1, "top_p": 1e-300},   # a nucleus below fp32's resolution
    {"temperature": 1e-40},                # logits / temperature overflow to inf
    {"temperature": 1e-300, "top_p": 1e-300, "top_k": 1},
])
def test_extreme_sampling_values_do_not_fail_the_batch(server, poison):
    good = {"model": MODEL, "prompt": [300, 301, 302], "max_tokens": 8, "temperature": 0, "ignore_eos": True}

    async def main():
        async with httpx.AsyncClient(base_url=server) as c:
            alone = await _complete(c, good)
            rs = await asyncio.gather(*[_complete(c, good) for _ in range(4)],
                                      _complete(c, {"prompt": "hi", "max_tokens": 3, **poison}))
            return alone, rs

    alone, rs = asyncio.run(main())
    assert [r.status_code for r in rs] == [200] * 5, [r.text for r in rs]
    assert all(r.json()["choices"][0]["text"] == alone.json()["choices"][0]["text"] for r in rs[:4])


@pytest.mark.parametrize("raw, param", [
    (b'{"prompt": "hi", "temperature": NaN}', "temperature"),
    (b'{"prompt": "hi", "top_p": Infinity}', "top_p"),
    (b'{"prompt": "hi", "temperature": -1e-9}', "temperature"),
    (b'{"prompt": "hi", "top_p": -0.0}', "top_p"),
    (b'{"prompt": "hi", "top_k": -2}', "top_k"),
    (b'{"prompt": "hi", "slo_ttft_s": NaN}', "slo_ttft_s"),
    (b'{"prompt": "hi", "frequency_penalty": 1e308}', "frequency_penalty"),
    (b'{"prompt": "hi", "repetition_penalty": 0.5}', "repetition_penalty"),
    (b'{"prompt": "hi", "min_tokens": 3}', "min_tokens"),
    (b'{"prompt": "hi", "best_of": 3}', "best_of"),
    (b'{"prompt": "hi", "echo": true}', "echo"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "n": 0}', "n"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "logprobs": true}', "logprobs"),
])
def test_bad_sampling_values_are_400_naming_the_field(server, raw, param):
    path = "/v1/chat/completions" if b"messages" in raw else "/v1/completions"
    r = httpx.post(server + path, content=raw, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_top_k_is_honoured(server):
    # top_k=1 is greedy whatever the temperature: the same text as temperature 0.
    base = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 10, "ignore_eos": True}
    greedy = httpx.post(server + "/v1/completions", json={**base, "temperature": 0}, timeout=30).json()
    top1 = httpx.post(server + "/v1/completions", json={**base, "temperature": 1.5, "top_k": 1, "seed": 3},
                      timeout=30).json()
    assert top1["choices"][0]["text"] == greedy["choices"][0]["text"]
