"""alpaca-like and long-context: generated offline, exact token ids, the shape their parameters name."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.workload import load_workload


def test_alpaca_like_is_short_lognormal_and_seeded() -> None:
    spec = "alpaca-like:n=2000,rate=20,prompt_mean=24,output_mean=64,max_output=600"
    wl = load_workload(spec, seed=1)
    assert len(wl) == 2000 and wl.name == "alpaca-like"
    p = np.array([r.prompt_tokens for r in wl.requests])
    o = np.array([r.output_tokens for r in wl.requests])
    assert all(len(r.token_ids) == r.prompt_tokens and r.prefix_id is None for r in wl.requests)
    assert abs(p.mean() - 24) < 2 and abs(o.mean() - 64) < 6  # lognormal means, not medians
    assert p.min() >= 4 and o.max() <= 600 and o.min() >= 1
    arr = np.array([r.arrival_s for r in wl.requests])
    assert abs(len(arr) / arr[-1] - 20) < 2  # Poisson at rate=20
    again = load_workload(spec, seed=1)
    assert [r.output_tokens for r in again.requests] == o.tolist()
    assert np.array_equal(again.requests[5].token_ids, wl.requests[5].token_ids)
    assert [r.output_tokens for r in load_workload(spec, seed=2).requests] != o.tolist()


def test_long_context_documents_are_shared_prefixes() -> None:
    spec = "long-context:docs=5,questions=3,doc_min=8192,doc_max=9000,question_len=20,output_len=30"
    wl = load_workload(spec, seed=4)
    assert len(wl) == 15 and wl.name == "long-context"
    docs: dict[int, list] = {}
    for r in wl.requests:
        assert 8192 <= r.prefix_tokens <= 9000 and r.prompt_tokens == len(r.token_ids) > r.prefix_tokens
        docs.setdefault(r.prefix_id, []).append(r)
    assert sorted(docs) == list(range(5)) and all(len(v) == 3 for v in docs.values())
    for rs in docs.values():
        n = rs[0].prefix_tokens
        assert all(r.prefix_tokens == n and np.array_equal(r.token_ids[:n], rs[0].token_ids[:n]) for r in rs)
        assert len({r.token_ids[n:].tobytes() for r in rs}) == 3  # own questions
    heads = {rs[0].token_ids[:64].tobytes() for rs in docs.values()}
    assert len(heads) == 5  # every document differs


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("alpaca-like:n=0", "n must be a positive"),
        ("alpaca-like:prompt_sigma=-1", "prompt_sigma must be a number >= 0"),
        ("alpaca-like:min_output=50,max_output=10", "min_output=50 exceeds max_output=10"),
        ("alpaca-like:foo=1", "allowed:"),
        ("long-context:doc_min=9000,doc_max=8000", "doc_min=9000 exceeds doc_max=8000"),
        ("long-context:docs=x", "not a number"),
    ],
)
def test_bad_options_name_the_problem(spec: str, needle: str) -> None:
    with pytest.raises(LlmplanError, match=needle):
        load_workload(spec)
