"""/metrics counts the GPU prefix cache's lookups and hits on a real server (llama-tiny, uvicorn)."""

from __future__ import annotations

import httpx
import pytest
from server_harness import metric, running_server


@pytest.mark.slow
def test_prefix_cache_counters_on_metrics() -> None:
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=4, num_kv_blocks=64, block_size=16,
                          enable_prefix_caching=True)  # fmt: skip
    shared = [300 + k for k in range(48)]  # 3 full blocks
    with running_server(engine) as url:
        answers = []
        for tail in ([7, 8, 9], [10, 11], [7, 8, 9]):
            body = {"prompt": shared + tail, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
            r = httpx.post(url + "/v1/completions", timeout=60, json=body)
            assert r.status_code == 200, r.text
            answers.append(r.json()["choices"][0]["text"])
        assert metric(url, "llmplan_prefix_cache_queries_total") == 51 + 50 + 51
        # the 2nd and 3rd prompts find the 3 shared blocks (48 tokens each)
        assert metric(url, "llmplan_prefix_cache_hits_total") == 96
        assert metric(url, "llmplan_prefix_cache_hit_ratio") == 96 / 152
        assert answers[0] == answers[2]  # the same prompt, served from the cache, answers the same
