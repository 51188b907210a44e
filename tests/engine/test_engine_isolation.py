"""One request whose sampling or stop handling fails fails alone; the rest of its step goes on.

The poison is put into the real engine past the API's checks (a NaN temperature, a
detokenizer that raises), as a bug or an unforeseen value would be; the good requests of the
same steps must finish with exactly the tokens they get without it.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.engine.sampling import RequestSampler, greedy, sample, top_p_filter

N_GOOD = 4


def _good(i: int) -> GenerateRequest:
    # Half greedy, half seeded random: both kinds must be unaffected by the poisoned row.
    sp = SamplingParams(max_tokens=10, temperature=0.0 if i % 2 else 0.8, top_p=0.9, seed=100 + i,
                        ignore_eos=True)
    return GenerateRequest(f"good{i}", [40 + i, 41, 42, 43, 44], sp)


def _run(eng, requests, poison=None) -> dict[str, list]:
    outs: dict[str, list] = defaultdict(list)
    for req in requests:
        eng.add_request(req, lambda o: outs[o.request_id].append(o))
    if poison is not None:
        poison(eng)
    steps_with_all = 0
    while eng.has_work():
        steps_with_all += eng.step() == len(requests)
    assert steps_with_all >= 1, "the poisoned request never shared a step with the good ones"
    return outs


def _tokens(outs, rid: str) -> list[int]:
    return [t for o in outs[rid] for t in o.new_token_ids]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    from llmplan.runtime.factory import build_engine

    path, _ = tiny_checkpoint
    return build_engine(model=str(path), num_kv_blocks=128, block_size=4, max_num_seqs=8).engine


def _nan_temperature(eng) -> None:
    eng._by_id["bad"].payload.sampler.params.temperature = float("nan")


def _raising_detokenizer(eng) -> None:
    class Broken:
        def update(self, ids, final):
            if len(ids) >= 3:
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected")
            return "", False

    eng._by_id["bad"].payload.detok = Broken()


@pytest.mark.parametrize("poison", [_nan_temperature, _raising_detokenizer], ids=["sampling", "stop"])
def test_a_poisoned_request_fails_alone_and_the_others_keep_their_tokens(engine, poison):
    alone = _run(engine, [_good(i) for i in range(N_GOOD)])
    expected = {f"good{i}": _tokens(alone, f"good{i}") for i in range(N_GOOD)}
    assert all(len(v) == 10 for v in expected.values())

    bad = GenerateRequest("bad", [7, 8, 9, 10, 11],
                          SamplingParams(max_tokens=10, temperature=0.7, stop=["zz"], ignore_eos=True))
    mixed = _run(engine, [_good(0), _good(1), bad, _good(2), _good(3)], poison)
    for rid, toks in expected.items():
        assert _tokens(mixed, rid) == toks, f"{rid} changed because another request failed"
        assert mixed[rid][-1].finish_reason == "length"
    last = mixed["bad"][-1]
    assert last.finished and last.finish_reason == "error" and last.error
    assert engine.scheduler.blocks.num_used == 0, "the failed request's blocks were not freed"
    assert not engine._by_id


def test_tiny_top_p_and_temperature_do_not_break_sampling():
    logits = torch.randn(2, 50, generator=torch.Generator().manual_seed(3))
    rows = [RequestSampler(SamplingParams(temperature=1.0, top_p=1e-300, seed=1), 0),
            RequestSampler(SamplingParams(temperature=1e-300, seed=2), 0)]
    assert sample(logits, rows) == logits.argmax(-1).tolist()
    assert all(s.error is None for s in rows)
    assert (top_p_filter(torch.tensor([0.6, 0.4]), 1e-300) > 0).tolist() == [True, False]


def test_top_k_keeps_only_the_k_most_likely_tokens():
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(4))
    top3 = set(logits[0].topk(3).indices.tolist())
    s = RequestSampler(SamplingParams(temperature=5.0, top_k=3, seed=9), 0)
    drawn = {sample(logits, [s])[0] for _ in range(200)}
    assert drawn <= top3 and len(drawn) > 1


def test_greedy_picks_what_argmax_picks_on_ties_and_nans():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(64, 3000, generator=g)
    # ties at the top (first index wins), an all-equal row, and NaNs (the first NaN wins)
    logits[1, 7] = logits[1, 2900] = logits[1, 1500] = 50.0
    logits[2] = 0.0
    logits[3, 40] = logits[3, 10] = float("nan")
    logits[4, -1] = float("inf")
    logits[5, 0] = logits[5, 1] = float("inf")
    expected = logits.argmax(-1)
    assert greedy(logits).tolist() == expected.tolist()
    assert greedy(logits)[[1, 2, 3, 5]].tolist() == [7, 0, 10, 0]
    greedy_rows = [RequestSampler(SamplingParams(temperature=0.0), 0) for _ in range(64)]
    assert sample(logits, greedy_rows) == expected.tolist()
