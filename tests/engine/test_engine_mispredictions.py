"""UELLM's online correction in the runtime: the engine logs mispredicted requests for
`llmplan predict update`, and only those."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmplan.errors import LlmplanError
from llmplan.predict.oracle import NoisyOraclePredictor, OraclePredictor
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine


def _run(predictor, log, n_tokens=5):
    async def main():
        eng = build_engine(
            dummy_weights="llama-tiny",
            num_kv_blocks=64,
            block_size=4,
            predictor=predictor,
            scheduler="sjf",
            misprediction_log=log,
        )
        await eng.start()
        reqs = [
            GenerateRequest(
                f"r{i}",
                [5, 6, 7, 8 + i],
                SamplingParams(max_tokens=n_tokens, temperature=0.0, ignore_eos=True),
                prompt=f"prompt number {i}",
            )
            for i in range(3)
        ]
        for r in reqs:
            async for _ in eng.generate(r):
                pass
        await eng.shutdown()
        return eng.stats()

    return asyncio.run(main())


def test_wrong_predictions_are_logged_with_prompt_and_actual_length(tmp_path):
    log = tmp_path / "mispredicted.jsonl"
    stats = _run(NoisyOraclePredictor(accuracy=0.0, seed=1), log)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert stats.predictor_total == 3 and stats.predictor_correct == 0
    assert len(rows) == 3
    assert len({r["prompt"] for r in rows}) == 3 and all(r["prompt"].strip() for r in rows)
    assert all(r["output_tokens"] == 5 and r["predicted_bucket"] != r["true_bucket"] for r in rows)


def test_right_predictions_are_not_logged(tmp_path):
    log = tmp_path / "mispredicted.jsonl"
    stats = _run(OraclePredictor(), log)
    assert stats.predictor_correct == stats.predictor_total == 3
    assert not log.exists() or log.read_text() == ""


def test_recording_needs_a_predictor(tmp_path):
    with pytest.raises(LlmplanError, match="--predictor"):
        build_engine(dummy_weights="llama-tiny", num_kv_blocks=16, misprediction_log=tmp_path / "x.jsonl")


class _BrokenPredictor:
    name = "broken"
    bucket_edges = (0, 8, 16)

    def predict(self, items):
        raise RuntimeError("predictor exploded")


def test_a_request_the_engine_cannot_accept_ends_with_an_error_not_a_hang():
    async def main():
        eng = build_engine(
            dummy_weights="llama-tiny",
            num_kv_blocks=16,
            block_size=4,
            predictor=_BrokenPredictor(),
            scheduler="sjf",
        )
        await eng.start()
        req = GenerateRequest("x", [5, 6, 7], SamplingParams(max_tokens=3, ignore_eos=True))
        outs = await asyncio.wait_for(_collect(eng.generate(req)), timeout=30)
        await eng.shutdown()
        return outs

    (out,) = asyncio.run(main())
    assert out.finished and out.finish_reason == "error" and "predictor exploded" in out.error


async def _collect(stream):
    return [o async for o in stream]
