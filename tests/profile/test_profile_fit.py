"""The resource profiler on synthetic data with cluster structure, and its error paths."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import LlmplanError
from llmplan.profile.cluster import elbow, fit_scaler, pick_elbow
from llmplan.profile.features import detect_language, infer_task
from llmplan.profile.profiler import ResourceProfiler, compare, predict_memory_mb
from llmplan.profile.report import fit_and_evaluate, read_csv

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_prof import synthetic_profile  # noqa: E402

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


@pytest.fixture(scope="module")
def fitted() -> ResourceProfiler:
    return ResourceProfiler.fit(synthetic_profile(150, seed=0), k=5, seed=0, n_estimators=30)


def test_profiler_beats_global_model_on_clustered_data(fitted) -> None:
    rows = compare(fitted, synthetic_profile(80, seed=10))
    ours = np.mean([r["profiler"] for r in rows])
    glob = np.mean([r["global"] for r in rows])
    assert ours > glob + 0.02, rows
    # clusters recover the regimes: each cluster is dominated by one task family
    sizes = [c["size"] for c in fitted.description]
    assert sum(sizes) == 150 and min(sizes) > 10
    vr = fitted.description[0]["variance_reduction"]
    assert vr["max_mem_mb"] > 0.8


def test_elbow_finds_the_knee() -> None:
    df = synthetic_profile(100, seed=1)
    ks = [2, 3, 4, 5, 6]
    costs = elbow(df, ks, fit_scaler(df))
    assert all(a >= b for a, b in zip(costs, costs[1:], strict=False))  # cost falls with K
    assert pick_elbow(ks, costs) in (3, 4, 5)
    assert pick_elbow([1, 2, 3, 4], [100.0, 20.0, 15.0, 12.0]) == 2


def test_save_load_and_memory_hook(fitted, tmp_path) -> None:
    fitted.save(tmp_path / "p")
    again = ResourceProfiler.load(tmp_path / "p")
    df = synthetic_profile(10, seed=3)
    assert np.allclose(fitted.predict(df)["max_mem_mb"], again.predict(df)["max_mem_mb"])
    mem = predict_memory_mb(
        tmp_path / "p",
        ["Summarize in one sentence: " + "the plant ran all night. " * 40, "hi"],
        output_tokens_est=[40, 30],
        tasks=["summarization", "chat"],
    )
    assert mem[0] > 10 * mem[1] > 0  # the summarization regime books far more memory than chat
    assert json.loads((tmp_path / "p" / "clusters.json").read_text())["k"] == 5


def test_fit_cli_writes_report_and_elbow(tmp_path) -> None:
    csv = tmp_path / "prof.csv"
    synthetic_profile(100, seed=4).to_csv(csv, index=False)
    r = CliRunner().invoke(
        app, ["profile", "fit", str(csv), "--out", str(tmp_path / "out"), "--n-estimators", "20", "--json"]
    )
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert res["elbow"]["chosen"] == res["k"] and (tmp_path / "out" / "elbow.png").stat().st_size > 1000
    assert {m["metric"] for m in res["within_10pct"]} == {
        "max_util",
        "mean_util",
        "max_mem_mb",
        "mean_mem_mb",
        "latency_s",
    }
    r = CliRunner().invoke(
        app,
        [
            "profile",
            "predict",
            "写一首关于秋天的诗。",
            "--profile",
            str(tmp_path / "out"),
            "--output-tokens",
            "50",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    row = json.loads(r.output)[0]
    assert row["lang"] == "zh" and row["task"] == "generation" and row["max_mem_mb"] > 0
    # The table form keeps its "[task/lang in=... cluster N]" prefix (it is text, not rich markup).
    r = CliRunner().invoke(
        app, ["profile", "predict", "Summarize [this]: a b c", "--profile", str(tmp_path / "out")]
    )
    assert r.exit_code == 0, r.output
    assert r.output.startswith("[summarization/en in=") and "Summarize [this]: a b c" in r.output


def test_bad_inputs(tmp_path) -> None:
    with pytest.raises(LlmplanError, match="does not exist"):
        read_csv(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("task,lang\nqa,en\n")
    with pytest.raises(LlmplanError, match="lacks columns"):
        read_csv(bad)
    with pytest.raises(LlmplanError, match="at least 20"):
        fit_and_evaluate(synthetic_profile(10), tmp_path / "o")
    with pytest.raises(LlmplanError, match="no fitted profiler"):
        ResourceProfiler.load(tmp_path)
    r = CliRunner().invoke(app, ["profile", "predict", "hi", "--profile", str(tmp_path), "--task", "dance"])
    assert isinstance(r.exception, LlmplanError) and "unknown task" in str(r.exception)


def test_task_and_language_inference() -> None:
    assert detect_language("把下面这段话翻译成英文") == "zh" and detect_language("Hello there") == "en"
    assert infer_task("Translate into Chinese: good night") == "translation"
    assert infer_task("Summarize in one sentence: ...") == "summarization"
    assert infer_task("Write a Python function that adds two numbers") == "code"
    assert infer_task("What is the capital of France?") == "qa"
    assert infer_task("Write a poem about rain") == "generation"
    assert infer_task("thanks!") == "chat"
