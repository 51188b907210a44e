"""The simulated global KV store: the tier below the GPU prefix cache, shared by every instance."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.metrics import compute_metrics
from llmplan.runtime.sim import SimConfig, simulate
from llmplan.runtime.sim.kvstore import SimKVStore
from llmplan.workload.types import RequestSpec, Workload


def test_store_is_an_lru_over_whole_blocks() -> None:
    st = SimKVStore(3)
    st.put([b"a", b"b", b"c"])
    assert st.match([b"a", b"b", b"x", b"c"]) == 2  # leading run only; refreshes a and b
    st.put([b"d"])  # evicts c, the least recently used
    assert b"c" not in st and len(st) == 3 and st.evictions == 1
    assert st.match([b"a", b"b", b"d"]) == 3
    with pytest.raises(LlmplanError, match="at least one block"):
        SimKVStore(0)


def _groups(n_groups: int, per: int, sys_len: int = 256, q_len: int = 32, gap: float = 2.0) -> Workload:
    """Each group's requests share a system prompt; groups come one after the other (A.. B.. A..)."""
    rng = np.random.default_rng(0)
    systems = [rng.integers(3200, 16000, size=sys_len, dtype=np.int32) for _ in range(n_groups)]
    reqs, t = [], 0.0
    for _rnd in range(2):  # every group twice: the second round finds its prefix evicted from the GPU
        for g in range(n_groups):
            for _ in range(per):
                ids = np.concatenate([systems[g], rng.integers(3200, 16000, size=q_len, dtype=np.int32)])
                reqs.append(RequestSpec(len(reqs), t, len(ids), 8, prefix_id=g, prefix_tokens=sys_len,
                                        token_ids=ids))
                t += gap
    return Workload("groups", reqs)


def _run(wl: Workload, **kw) -> tuple[dict, dict]:
    res = simulate(wl, SimConfig(instances=kw.pop("instances", 1), model="llama-2-7b", **kw))
    m = compute_metrics(res, wl)
    return res.counters, m.summary


def test_store_serves_what_the_gpu_cache_evicted_and_prefill_shrinks_by_it() -> None:
    wl = _groups(n_groups=6, per=2)
    prompt = sum(r.prompt_tokens for r in wl.requests)
    # 40 blocks of 16 tokens: one group's system prompt (16 blocks) and its request fit, not six
    plain, _ = _run(wl, num_blocks=40)
    stored, summary = _run(wl, num_blocks=40, kv_store_gb=1.0)
    assert plain["prefix_cache_evictions"] > 0 and "kv_store_hit_tokens" not in plain
    assert stored["prefix_cache_hit_tokens"] == plain["prefix_cache_hit_tokens"]  # same GPU tier
    # the second round's system prompts come from the store: 6 groups x 16 blocks x 16 tokens
    assert stored["kv_store_hit_tokens"] == 6 * 256
    for c in (plain, stored):  # every prompt token is computed, or found in one of the tiers
        assert c["prefill_tokens"] == prompt - c["prefix_cache_hit_tokens"] - c.get("kv_store_hit_tokens", 0)
    pc = summary["prefix_cache"]
    assert pc["store"]["hit_tokens"] == 6 * 256 and pc["store"]["load_s"] > 0
    assert pc["saved_prefill_tokens"] == stored["prefix_cache_hit_tokens"] + 6 * 256


def test_store_shares_prefixes_across_instances_and_forgets_when_full() -> None:
    wl = _groups(n_groups=1, per=4)  # round-robin over 2 instances: each computes the prefix once
    shared, _ = _run(wl, instances=2, router="round-robin", kv_store_gb=1.0)
    alone, _ = _run(wl, instances=2, router="round-robin")
    # without the store instance i1 computes the system prompt itself; with it, i1 loads it
    assert shared["kv_store_hit_tokens"] == 256
    assert shared["prefill_tokens"] == alone["prefill_tokens"] - 256
    # a store of ~8 blocks (7b: 0.5 MiB per token) keeps only the newest writes: no prefix survives
    tiny, _ = _run(wl, instances=2, router="round-robin", kv_store_gb=8 * 16 * 524288 / 2**30)
    assert tiny["kv_store_capacity_blocks"] == 8 and tiny["kv_store_evictions"] > 0
    assert tiny["kv_store_hit_tokens"] == 0


def test_bad_store_settings_are_refused() -> None:
    wl = _groups(n_groups=1, per=1)
    with pytest.raises(LlmplanError, match="kv_store_gb"):
        simulate(wl, SimConfig(kv_store_gb=0.0))
    with pytest.raises(LlmplanError, match="kv_store_gbps"):
        simulate(wl, SimConfig(kv_store_gb=1.0, kv_store_gbps=float("nan")))


def test_store_keeps_fast_forward_equal_to_stepping() -> None:
    wl = _groups(n_groups=6, per=3, gap=0.05)  # overlapping requests: decode runs split by arrivals
    runs = []
    for ff in (True, False):
        res = simulate(wl, SimConfig(instances=2, router="round-robin", model="llama-2-7b", num_blocks=60,
                                     kv_store_gb=1.0, fast_forward=ff))  # fmt: skip
        runs.append(res)
    fast, stepped = runs
    assert fast.counters["decode_runs"] > 0 and stepped.counters["decode_runs"] == 0
    assert fast.counters["kv_store_hit_tokens"] == stepped.counters["kv_store_hit_tokens"] > 0
    assert [(r.rid, r.status) for r in fast.records] == [(r.rid, r.status) for r in stepped.records]
    for col in ("first_token_s", "finish_s"):
        got = [getattr(r, col) for r in fast.records]
        assert got == pytest.approx([getattr(r, col) for r in stepped.records], rel=1e-9)
