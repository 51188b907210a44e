"""The saved prompt-length GBM: `predict train --kind gbm` writes LightGBM text + JSON, loaded
without pickle by `gbm:DIR` (bench) and `predict eval DIR`; its rank score is its predicted length."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import LlmplanError
from llmplan.predict.baselines import GBM_META_FILE, GBM_MODEL_FILE, PromptLengthGBM
from llmplan.predict.buckets import bucket_of
from llmplan.predict.data import as_examples
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES as EDGES
from llmplan.predict.oracle import parse_predictor


def _length_signal(n: int, seed: int):
    """Longer prompts get longer replies (what a prompt-length model can learn)."""
    rng = random.Random(seed)
    prompts, outs = [], []
    for _ in range(n):
        words = rng.choice([3, 30, 120])
        prompts.append(" ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(words)))
        outs.append(int({3: 20, 30: 200, 120: 900}[words] * rng.uniform(0.8, 1.2)))
    return as_examples(prompts, outs)


@pytest.mark.slow  # > 5 s on 2 shared cores (first use of the counting tokenizer)
def test_save_load_round_trip_without_pickle(tmp_path) -> None:
    tr, te = _length_signal(120, 0), _length_signal(40, 1)
    gbm = PromptLengthGBM(tr, EDGES)
    gbm.save(tmp_path / "g", {"note": "test"})
    text = (tmp_path / "g" / GBM_MODEL_FILE).read_text()
    assert text.startswith("tree")  # LightGBM's text format
    loaded = parse_predictor(f"gbm:{tmp_path / 'g'}")
    assert isinstance(loaded, PromptLengthGBM) and loaded.name == "gbm:g"
    assert loaded.bucket_edges == EDGES and loaded.meta["note"] == "test"
    a, b = gbm.predict(te.prompts), loaded.predict(te.prompts)
    assert a.buckets == b.buckets and a.lengths == b.lengths
    assert b.rank_scores == [float(x) for x in b.lengths]
    from scipy.stats import spearmanr

    assert spearmanr(b.rank_scores, te.output_tokens).statistic > 0.8
    assert loaded.predict([]).buckets == []


def test_one_class_gbm_saves_and_loads(tmp_path) -> None:
    ds = as_examples(["hi", "hello there", "hey"], [100, 110, 120])
    PromptLengthGBM(ds, EDGES).save(tmp_path / "one")
    assert not (tmp_path / "one" / GBM_MODEL_FILE).exists()
    b = int(bucket_of([100], EDGES)[0])  # [64,128): all three replies
    assert PromptLengthGBM.load(tmp_path / "one").predict(["x", "y"]).buckets == [b, b]


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: None, f"no {GBM_META_FILE}"),
        (lambda d: (d / GBM_META_FILE).write_text("{oops"), "GBM predictor meta"),
        (
            lambda d: (d / GBM_META_FILE).write_text(json.dumps({"kind": "other"})),
            "not a GBM predictor's meta",
        ),
        (
            lambda d: (d / GBM_META_FILE).write_text(
                json.dumps(
                    {
                        "kind": "prompt-length-gbm",
                        "bucket_edges": [0, 8],
                        "representatives": [4, 12],
                        "classes": [0, 1],
                    }
                )
            ),
            f"no {GBM_MODEL_FILE}",
        ),
    ],
)
def test_bad_gbm_dirs_are_one_line_errors(tmp_path, setup, needle) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    setup(d)
    with pytest.raises(LlmplanError, match=needle):
        PromptLengthGBM.load(d)


def test_bad_lightgbm_text_is_one_line(tmp_path) -> None:
    d = tmp_path / "bad"
    PromptLengthGBM(_length_signal(60, 0), EDGES).save(d)
    (d / GBM_MODEL_FILE).write_text("not a model\n")
    with pytest.raises(LlmplanError, match="not a LightGBM model"):
        PromptLengthGBM.load(d)


def test_cli_train_kind_gbm_then_eval_and_bench(tmp_path) -> None:
    data = tmp_path / "d.jsonl"
    ex = _length_signal(150, 3).examples
    data.write_text(
        "\n".join(json.dumps({"id": e.uid, "prompt": e.prompt, "output_tokens": e.output_tokens}) for e in ex)
    )
    run = CliRunner().invoke
    r = run(
        app,
        ["predict", "train", "--kind", "gbm", "--data", str(data), "--out", str(tmp_path / "g"), "--json"],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["kind"] == "gbm" and summary["train_examples"] < 150
    assert (tmp_path / "g" / GBM_MODEL_FILE).is_file()
    r = run(app, ["predict", "eval", str(tmp_path / "g"), "--latency-n", "0", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    row = next(s for s in res["scores"] if s["predictor"] == "gbm:g" and s["split"] == "test")
    # the saved model scores exactly like the in-memory baseline trained on the same split
    base = next(s for s in res["scores"] if s["predictor"] == "prompt-length GBM" and s["split"] == "test")
    assert row["exact"] == base["exact"] and row["spearman"] == base["spearman"]
    assert row["spearman"] > 0.5 and res["head_scores"] == []
    r = run(app, ["predict", "train", "--kind", "svm", "--data", str(data), "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, LlmplanError) and "use lora or gbm" in str(r.exception)
    r = run(app, ["predict", "train", "--heads", "rank", "--data", str(data), "--out", str(tmp_path / "x")])
    assert isinstance(r.exception, LlmplanError) and "lacks bucket" in str(r.exception)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow  # > 5 s on 2 shared cores (a simulated bench run)
def test_bench_replays_a_saved_gbm(tmp_path) -> None:
    PromptLengthGBM(_length_signal(150, 4), EDGES).save(tmp_path / "g")
    out = tmp_path / "rep"
    r = CliRunner().invoke(
        app,
        ["bench", "--trace", "synthetic:rate=2,n=30", "--instances", "1", "--jobs", "1", "--no-plots",
         "--policy", "sjf", "--predictor", f"gbm:{tmp_path / 'g'}", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    s = json.loads((out / "report.json").read_text())["config"]["predictor_scores"]
    assert s["n"] == 30 and s["name"] == "gbm:g"
    assert 0.0 <= np.float64(s["exact"]) <= 1.0
