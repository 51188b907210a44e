"""Scheduled store hits (``build_engine(kv_store=..., kv_store_schedule_hits=True)``): admission
asks the store for a prompt's cached prefix, only the rest is scheduled and budgeted against
``max_num_batched_tokens``, and the admitting step loads the promised blocks -- or computes any
that vanished or rotted since the probe. Real servers, llama-tiny dummy weights, real files."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))

from server_harness import metric, running_server  # noqa: E402

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


BS = 16
BUDGET = 64
_rng = random.Random(23)
SHARED = [_rng.randrange(3, 32000) for _ in range(160)]  # 10 full blocks
PROMPT_A = SHARED + [_rng.randrange(3, 32000) for _ in range(9)]
PROMPT_B = SHARED + [_rng.randrange(3, 32000) for _ in range(37)]  # 197 tokens: 12 full blocks + 5


def _engine(**kw):
    from llmplan.runtime.factory import build_engine

    return build_engine(dummy_weights="llama-tiny", max_num_seqs=4, threads=1, num_kv_blocks=64,
                        max_num_batched_tokens=BUDGET, **kw)


def _complete(url: str, prompt: list[int], n: int = 6) -> str:
    body = {"prompt": prompt, "max_tokens": n, "temperature": 0.0, "ignore_eos": True}
    r = httpx.post(url + "/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["text"]


def _wipe_pool(engine) -> None:
    """Freed blocks keep their KV and may be handed out again: zero them, so a promised block
    that was never loaded shows up as wrong output instead of passing on stale KV."""
    kv = engine.engine.executor.kv
    for t in (*kv.k, *kv.v):
        t.zero_()


def _steps(engine) -> int:
    return engine.engine.scheduler.stats.steps


@pytest.fixture(scope="module")
def reference():
    with running_server(_engine()) as url:
        yield {"a": _complete(url, PROMPT_A), "b": _complete(url, PROMPT_B),
               "b1": _complete(url, PROMPT_B, n=1)}


def test_scheduled_hits_give_identical_output_and_budget_only_the_uncached_tail(tmp_path, reference):
    engine = _engine(kv_store=str(tmp_path), kv_store_schedule_hits=True)
    sched = engine.engine.scheduler
    with running_server(engine) as url:
        assert _complete(url, PROMPT_A) == reference["a"]  # cold: 169 tokens in 3 chunks
        assert metric(url, "llmplan_kvstore_promised_blocks_total") == 0
        assert metric(url, "llmplan_kvstore_written_blocks_total") == 10
        _wipe_pool(engine)
        before = sched.stats.prefill_tokens
        assert _complete(url, PROMPT_B) == reference["b"]
        # The 10 shared blocks were promised at admission and loaded; B's 37-token rest was
        # the only prefill scheduled (one chunk under the 64-token budget).
        assert metric(url, "llmplan_kvstore_promised_blocks_total") == 10
        assert metric(url, "llmplan_kvstore_promised_loaded_blocks_total") == 10
        assert metric(url, "llmplan_kvstore_promised_recomputed_blocks_total") == 0
        assert sched.stats.prefill_tokens - before == len(PROMPT_B) - 160
        assert sched.stats.cached_prefix_tokens == 160


def test_a_prompt_cached_but_for_its_tail_prefills_in_one_step(tmp_path, reference):
    # Same store and budget; with and without scheduled hits. Without, B (197 tokens) is still
    # chunked 64 + 64 + 64 + 5 from token 0: four steps, and each chunk computes at least one
    # token, so only 3 of its 4 blocks can load (9 of 12). With, the 12 blocks are promised at
    # admission and the 5-token tail is the whole prefill.
    for schedule, want_steps, want_hits in ((False, 4, 9), (True, 1, 12)):
        engine = _engine(kv_store=str(tmp_path / str(schedule)), kv_store_schedule_hits=schedule)
        with running_server(engine) as url:
            assert _complete(url, PROMPT_B, n=1) == reference["b1"]  # fills the store
            _wipe_pool(engine)
            s0 = _steps(engine)
            assert _complete(url, PROMPT_B, n=1) == reference["b1"]
            assert _steps(engine) - s0 == want_steps, f"schedule_hits={schedule}"
            assert metric(url, "llmplan_kvstore_hit_blocks_total") == want_hits


@pytest.mark.parametrize("fault", ["delete", "corrupt"])
def test_a_promised_block_lost_before_its_load_is_computed_in_the_same_step(tmp_path, reference, fault):
    import torch

    from llmplan.kvstore.hashing import block_hashes
    from llmplan.kvstore.serving import model_namespace
    from llmplan.runtime.engine.config import catalog_config

    # Disk tier only, so every load reads and checks a file.
    engine = _engine(kv_store=str(tmp_path), kv_store_memory_mb=0, kv_store_schedule_hits=True)
    sched = engine.engine.scheduler
    ns = model_namespace(catalog_config("llama-tiny"), "dummy:llama-tiny:seed=0", torch.float32, BS)
    victim_key = block_hashes(PROMPT_A, BS, ns)[6].hex()
    probe = sched.prefix_probe
    promised: list[int] = []

    def probe_then_fault(seq):
        # Another process evicts (or a disk rots) block 6 after admission promised it.
        n = probe(seq)
        promised.append(n)
        files = sorted(tmp_path.rglob(f"{victim_key}*.kvb"))
        assert len(files) == 4  # one per layer
        if fault == "delete":
            for f in files:
                f.unlink()
        else:
            f = next(f for f in files if ".L2." in f.name)
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0x01
            f.write_bytes(bytes(data))
        return n

    with running_server(engine) as url:
        assert _complete(url, PROMPT_A) == reference["a"]
        _wipe_pool(engine)
        sched.prefix_probe = probe_then_fault
        s0 = _steps(engine)
        assert _complete(url, PROMPT_B) == reference["b"]
        assert promised == [160]
        assert _steps(engine) - s0 == 6  # still one prefill step (+ 5 decodes): nothing re-queued
        assert metric(url, "llmplan_kvstore_promised_blocks_total") == 10
        assert metric(url, "llmplan_kvstore_promised_loaded_blocks_total") == 6
        assert metric(url, "llmplan_kvstore_promised_recomputed_blocks_total") == 4
        if fault == "corrupt":
            assert metric(url, "llmplan_kvstore_corrupt_dropped_total") == 1
            assert metric(url, "llmplan_kvstore_step_retries_total") == 1



def _run_together(engine, prompts: list[list[int]], n: int) -> list[list[int]]:
    """All prompts queued before the first step (no HTTP timing), run to completion."""
    from llmplan.runtime.engine.api import GenerateRequest, SamplingParams

    out: dict[str, list[int]] = {str(i): [] for i in range(len(prompts))}
    eng = engine.engine
    for i, p in enumerate(prompts):
        sp = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        eng.add_request(GenerateRequest(str(i), p, sp), lambda o: out[o.request_id].extend(o.new_token_ids))
    steps = 0
    while eng.has_work():
        eng.step()
        steps += 1
        assert steps < 1000
    return [out[str(i)] for i in range(len(prompts))]


def test_preempted_requests_are_readmitted_at_their_cached_prefix_with_identical_output():
    # 9 KV blocks for three 40-token prompts with 30 output tokens each: preemption by
    # recompute. The first admissions find an empty store; a re-admitted sequence is probed
    # again (its prompt and generated tokens) and starts at the blocks written back meanwhile.
    from llmplan.runtime.factory import build_engine

    rng = random.Random(11)
    prompts = [SHARED[:32] + [rng.randrange(3, 32000) for _ in range(8)] for _ in range(3)]

    def engine(**kw):
        return build_engine(dummy_weights="llama-tiny", max_num_seqs=8, threads=1, num_kv_blocks=9, **kw)

    want = _run_together(engine(), prompts, 30)
    eng = engine(kv_store="memory", kv_store_memory_mb=64, kv_store_schedule_hits=True)
    got = _run_together(eng, prompts, 30)
    stats = eng.engine.scheduler.stats
    assert stats.preemptions > 0
    assert stats.cached_prefix_tokens > 0
    ex = eng.engine.executor.stats
    assert ex.promised_blocks * BS == stats.cached_prefix_tokens
    assert ex.promised_recomputed_blocks == 0
    assert all(len(g) == 30 for g in got)
    assert got == want
