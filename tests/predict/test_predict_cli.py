"""`llmplan predict train|eval|query|update` end to end on a tiny JSONL (a few LoRA steps)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app

from .synthetic_len import synthetic


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_cli_train_eval_query_update(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"id": e.uid, "prompt": e.prompt, "output_tokens": e.output_tokens})
            for e in synthetic(40, seed=9).examples
        )
    )
    model = tmp_path / "m"
    run = CliRunner().invoke
    r = run(
        app,
        [
            "predict",
            "train",
            "--data",
            str(data),
            "--out",
            str(model),
            "--max-steps",
            "3",
            "--max-length",
            "16",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["steps"] == 3
    r = run(
        app,
        ["predict", "eval", str(model), "--report-dir", str(tmp_path / "rep"), "--latency-n", "4", "--json"],
    )
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)["scores"]
    assert {s["predictor"] for s in scores} >= {"majority", "prompt-length GBM"}
    assert {s["split"] for s in scores} == {"test", "test_dedup"}
    # the default model has all three heads; eval scores each head's outputs on both splits
    res = json.loads(r.output)
    assert res["heads"] == ["bucket", "rank", "quantile"]
    outputs = {(h["split"], h["head"], h["output"]) for h in res["head_scores"]}
    for split in ("test", "test_dedup"):
        assert {(split, "rank", "rank score"), (split, "quantile", "p90 calibrated")} <= outputs
    lora = next(s for s in scores if s["predictor"] == "lora:m" and s["split"] == "test")
    assert lora["upper_coverage"] is not None and lora["booked_per_needed"] > 0
    assert "| rank | rank score | order |" in (tmp_path / "rep" / "scores.md").read_text()
    assert (tmp_path / "rep" / "confusion.png").stat().st_size > 1000
    cm = json.loads((tmp_path / "rep" / "confusion.json").read_text())
    assert cm["split"] == "test" and len(cm["matrix"]) == len(cm["bucket_edges"])
    assert sum(map(sum, cm["counts"])) == cm["n"] > 0
    for row, counts in zip(cm["matrix"], cm["counts"], strict=True):
        assert abs(sum(row) - 1.0) < 1e-9 if sum(counts) else sum(row) == 0
    # bench replays with the saved matrix (one 10-request run of s3).
    cmf = tmp_path / "rep" / "confusion.json"
    r = run(app, ["bench", "--trace", "synthetic:rate=2,n=10", "--policy", "s3", "--instances", "1",
                  "--jobs", "1", "--no-plots", "--predictor", f"noisy-cm:{cmf}",
                  "--out", str(tmp_path / "b")])  # fmt: skip
    assert r.exit_code == 0 or "no examples of true bucket" in str(r.exception or r.output), r.output
    r = run(app, ["predict", "query", "Write a long detailed essay about jazz.", "--predictor", str(model),
                  "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["range"].startswith("[")
    rec = tmp_path / "mis.jsonl"
    rec.write_text('{"prompt": "Write a long detailed essay about jazz.", "output_tokens": 700}\n')
    r = run(
        app,
        [
            "predict",
            "update",
            str(rec),
            "--predictor",
            str(model),
            "--out",
            str(tmp_path / "m2"),
            "--epochs",
            "1",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["records"] == 1


def test_cli_errors_are_one_line(tmp_path) -> None:
    from llmplan.errors import LlmplanError

    r = CliRunner().invoke(app, ["predict", "train", "--data", str(tmp_path / "nope.jsonl")])
    assert r.exit_code != 0 and isinstance(r.exception, LlmplanError) and "does not exist" in str(r.exception)
    r = CliRunner().invoke(app, ["predict", "query", "hi", "--predictor", str(tmp_path)])
    assert isinstance(r.exception, LlmplanError) and "not a saved length predictor" in str(r.exception)
    # -m/--model (elsewhere the LLM) is the old spelling of --predictor: same effect, one deprecation line.
    r = CliRunner().invoke(app, ["predict", "query", "hi", "-m", str(tmp_path)])
    assert isinstance(r.exception, LlmplanError) and "not a saved length predictor" in str(r.exception)
    assert f"deprecated: --model {tmp_path} is the old spelling; write --predictor {tmp_path}" in r.stderr
    r = CliRunner().invoke(app, ["predict", "query", "hi", "-m", str(tmp_path), "--predictor", str(tmp_path)])
    assert isinstance(r.exception, LlmplanError) and "give --predictor DIR once" in str(r.exception)
