"""Loaders, splits, buckets and their error paths (no torch)."""

from __future__ import annotations

import json

import pytest

from llmplan.errors import LlmplanError
from llmplan.predict.buckets import bucket_labels, bucket_medians, bucket_of, parse_edges
from llmplan.predict.data import (
    load_alpaca,
    load_dataset,
    load_jsonl,
    load_sharegpt,
    split_dataset,
)
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES
from llmplan.workload.sharegpt import scan


def test_uellm_buckets() -> None:
    got = bucket_of([0, 7, 8, 15, 16, 1023, 1024, 2047, 2048, 10**6], DEFAULT_BUCKET_EDGES).tolist()
    assert got == [0, 0, 1, 1, 2, 7, 8, 8, 9, 9]
    assert bucket_labels(DEFAULT_BUCKET_EDGES)[-1] == "[2048,inf)"
    assert bucket_medians([1, 2, 3, 100, 300], (0, 8, 256)) == [2, 100, 300]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("8,16", "start at 0"), ("0,16,8", "strictly increasing"), ("0,a", "not comma-separated"), ("0", "two")],
)
def test_bad_edges_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(LlmplanError, match=fragment):
        parse_edges(text)


def test_truncated_json_array_recovers_complete_records(tmp_path) -> None:
    text = json.dumps(
        [
            {"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": "a"}]}
            for i in range(3)
        ]
    )
    (tmp_path / "cut.json").write_text(text[:-12])  # cut inside the third record
    (tmp_path / "whole.json").write_text(text)
    cut, whole = scan(tmp_path / "cut.json"), scan(tmp_path / "whole.json")
    assert [q for q, _ in cut.pairs] == ["q0", "q1"] and cut.truncated and cut.ids == ["0", "1"]
    assert whole.records == 3 and not whole.truncated


def test_sharegpt_loader_on_a_cut_file(tmp_path) -> None:
    recs = [
        {
            "id": "a_0",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}],
        },
        {"id": "b_0", "conversations": [{"from": "gpt", "value": "starts with gpt"}]},
        {
            "id": "c_0",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a b c d"}],
        },
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(recs, indent=1)[:-30])
    ds = load_sharegpt(path)
    assert ds.meta["records_recovered"] == 2 and ds.meta["file_truncated"]
    assert [e.uid for e in ds.examples] == ["a_0"] and ds.examples[0].output_tokens > 0
    assert "mistral" in ds.tokenizer


def test_jsonl_and_alpaca_loaders(tmp_path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_text(
        '{"prompt": "hi", "output_tokens": 5}\n\n{"prompt": "yo", "output_tokens": 9, "prompt_tokens": 3}\n'
    )
    ds = load_jsonl(p)
    assert ds.output_tokens == [5, 9] and ds.prompt_tokens[1] == 3
    a = tmp_path / "alpaca.json"
    a.write_text(json.dumps([{"instruction": "Add", "input": "2 and 3", "output": "The sum is five."}]))
    ds = load_dataset(a)
    assert ds.examples[0].prompt == "Add\n\n2 and 3" and ds.examples[0].output_tokens >= 4


def test_bad_inputs_name_the_problem(tmp_path) -> None:
    with pytest.raises(LlmplanError, match="does not exist"):
        load_jsonl(tmp_path / "missing.jsonl")
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok", "output_tokens": 1}\n{"prompt": "no length"}\n')
    with pytest.raises(LlmplanError, match=r"bad.jsonl:2:"):
        load_jsonl(p)
    a = tmp_path / "a.json"
    a.write_text('[{"instruction": "x"}]')
    with pytest.raises(LlmplanError, match="record 0 lacks"):
        load_alpaca(a)
    with pytest.raises(LlmplanError, match="unknown data format"):
        load_dataset(tmp_path / "x.parquet")


def test_split_is_deterministic_grouped_and_deduplicated(tmp_path) -> None:
    rows = [
        {"id": f"c{i // 2}_{i % 2}", "prompt": f"prompt {i % 30}", "output_tokens": i} for i in range(200)
    ]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    ds = load_jsonl(p)
    s1, s2 = split_dataset(ds, 0.3, seed=7), split_dataset(ds, 0.3, seed=7)
    assert [e.uid for e in s1.test.examples] == [e.uid for e in s2.test.examples]
    assert {e.group for e in s1.train.examples}.isdisjoint({e.group for e in s1.test.examples})
    train_prompts = {e.prompt for e in s1.train.examples}
    assert all(e.prompt not in train_prompts for e in s1.test_dedup.examples)
    assert len(s1.test_dedup) < len(s1.test)
    s3 = split_dataset(ds, 0.3, seed=8)
    assert [e.uid for e in s3.test.examples] != [e.uid for e in s1.test.examples]
    assert 0.15 < len(s1.test) / len(ds) < 0.45
