"""Attention-level migration in a multi-worker instance: KV heads of a layer offloaded to another
worker, while requests run through the engine's own step loop. Greedy tokens must equal one
process: heads whose KV was not carried over, a host answering the wrong layer's request, or a
rank serving out of order (a hang, caught by the worker timeout) all change or stop the output.
"""

from __future__ import annotations

import pytest

from llmplan.errors import LlmplanError
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine

pytestmark = pytest.mark.slow


def _run(aeng, actions=None) -> dict[int, list[int]]:
    """Four requests (two join later), greedy; ``actions[step](executor)`` runs before that step."""
    eng = aeng.engine
    outs: dict[int, list[int]] = {}

    def add(i: int, n: int) -> None:
        prompt = [(7 * i + j * 13) % 31000 + 3 for j in range(n)]
        eng.add_request(GenerateRequest(f"r{i}", prompt, SamplingParams(max_tokens=14, temperature=0,
                                                                         ignore_eos=True)),
                        lambda o, i=i: outs.setdefault(i, []).extend(o.new_token_ids))

    add(0, 5)
    add(1, 40)
    step = 0
    while eng.has_work() or step < 4:
        if step == 2:
            add(2, 23)
        if step == 4:
            add(3, 9)
        if actions and step in actions:
            actions[step](eng.executor)
        eng.step()
        step += 1
    return outs


def test_offloaded_heads_in_both_directions_with_layer_moves_match_one_process():
    ref = _run(build_engine(dummy_weights="llama-tiny", num_kv_blocks=64))
    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=64, workers=3, worker_timeout_s=30)
    ex = engine.engine.executor
    try:
        assert ex.ranges == [(0, 1), (1, 2), (2, 4)]
        recs = []
        actions = {
            # owner before host: worker 2 serves layer 0 before its hidden state arrives
            1: lambda e: recs.append(e.offload_attention([0], 0, 2, 1)),
            # owners after host: rank 0 serves layers 1 and 3 after passing its hidden state on
            3: lambda e: recs.append(e.offload_attention([3], 2, 0, 1)),
            5: lambda e: recs.append(e.offload_attention([1], 1, 0, 1)),
            # a layer move next to offloaded layers, then one of an offloaded layer (restored first)
            7: lambda e: e.migrate((2,), 2, 1),
            9: lambda e: e.migrate((1,), 1, 0),
            11: lambda e: e.restore_attention(),
            12: lambda e: recs.append(e.offload_attention([2], 1, 2, 1)),
        }
        out = _run(engine, actions)
        assert out == ref and all(len(t) == 14 for t in out.values())
        assert [(r.layers, r.src, r.dst, r.kv_heads) for r in recs] == [
            ((0,), 0, 2, 1), ((3,), 2, 0, 1), ((1,), 1, 0, 1), ((2,), 1, 2, 1)]
        assert all(r.bytes > 0 and r.measured_s > 0 and r.estimate_s > 0 for r in recs)
        assert ex.ranges == [(0, 2), (2, 3), (3, 4)]
        assert {i: (o.owner, o.host) for i, o in ex.offloads.items()} == {2: (1, 2)}
        st = ex.stats()
        # restores: layer 1 before its move, then layers 0 and 3
        assert st.offloads["admin"] == 4 and st.restores["admin"] == 3
        assert st.hosted_kv_heads == [0, 0, 1]
        assert all(b > 0 for b in st.busy_s_total)
    finally:
        ex.close()


def test_offload_in_the_middle_of_a_chunked_prefill_matches_one_process():
    """A 12-token step budget cuts the 40-token prompt into chunks: the offload lands between two
    of them, so the host must hold the earlier chunks' KV (carried over) and extend it."""
    kw = dict(dummy_weights="llama-tiny", num_kv_blocks=64, max_num_batched_tokens=12)
    ref = _run(build_engine(**kw))
    engine = build_engine(**kw, workers=2, worker_timeout_s=30)
    ex = engine.engine.executor
    try:
        out = _run(engine, {1: lambda e: e.offload_attention([0, 1], 0, 1, 1),
                            3: lambda e: e.offload_attention([3], 1, 0, 1)})
        assert out == ref and all(len(t) == 14 for t in out.values())
        assert ex.offload_records[0].bytes > 0  # KV of the first chunks travelled
    finally:
        ex.close()


def test_offload_requests_are_checked_before_anything_moves():
    engine = build_engine(dummy_weights="llama-tiny", num_kv_blocks=32, workers=2, worker_timeout_s=30)
    ex = engine.engine.executor
    try:
        for args, words in [
            (([2], 0, 1, 1), "layer 2 is not on worker 0, which holds layers [0, 2)"),
            (([1], 0, 0, 1), "src and dst must be different workers"),
            (([1], 0, 2, 1), "worker dst=2 does not exist"),
            (([1], 0, 1, 2), "kv_heads must be 1..1"),
        ]:
            with pytest.raises(LlmplanError, match=words.replace("[", r"\[").replace(")", r"\)")):
                ex.offload_attention(*args)
        ex.offload_attention([1], 0, 1, 1)
        with pytest.raises(LlmplanError, match="already has 1 KV head"):
            ex.offload_attention([1], 0, 1, 1)
        assert ex.restore_attention([0, 1]) == [1] and ex.offloads == {}
    finally:
        ex.close()
