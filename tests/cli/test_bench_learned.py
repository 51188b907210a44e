"""`bench --predictor learned:DIR` through the real CLI with a tiny LoRA predictor trained here:
the report scores the model's own predictions on the replayed ShareGPT prompts, and a trace
without prompt text is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmplan.cli.app import main  # noqa: F401 - the code under test (run through conftest.run_cli)
from llmplan.predict.evaluate import replay_scores
from llmplan.predict.learned import LearnedLengthPredictor
from llmplan.predict.train import TrainConfig, train
from llmplan.workload.loader import load_workload

from ..predict.synthetic_len import synthetic
from .conftest import assert_clean_error, run_cli

# Training a real MiniLM + LoRA for a few steps: seconds on idle cores, longer on shared ones.
pytestmark = pytest.mark.slow
TINY = TrainConfig(epochs=1, batch_size=8, max_length=16, lr=4e-3, checkpoint_steps=100)
N = 40


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("learned") / "model"
    train(synthetic(24, seed=2), out, config=TINY, show_progress=False)
    return out


def test_learned_predictor_scores_its_own_predictions(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = run_cli(["bench", "--trace", "sharegpt:rate=4", "-n", str(N), "--instances", "1", "--jobs", "1",
                   "--no-plots", "--energy", "off", "--policy", "sjf", "--predictor", f"learned:{model_dir}",
                   "--out", str(out)])  # fmt: skip
    assert res.code == 0, res.stderr
    s = json.loads((out / "report.json").read_text())["config"]["predictor_scores"]
    # The same model run directly on the same prompts gives the same scores.
    reqs = list(load_workload("sharegpt:rate=4", max_requests=N, seed=0).requests)
    pred = LearnedLengthPredictor(model_dir)
    direct = pred.predict(reqs)
    want = replay_scores(direct.buckets, direct.lengths, [r.output_tokens for r in reqs], pred.bucket_edges)
    assert s["name"] == pred.name and s["name"].startswith("lora:")
    assert s["n"] == N
    for k in ("exact", "within1", "underestimate", "spearman"):
        assert s[k] == pytest.approx(want[k]), k
    assert f"| learned:{model_dir} | {N} |" in (out / "report.md").read_text()


def test_trace_without_text_is_refused(model_dir: Path, tmp_path: Path) -> None:
    for trace in ("synthetic:rate=2,n=20", "shared-prefix:groups=2,per_group=4"):
        res = run_cli(["bench", "--trace", trace, "--instances", "1", "--jobs", "1", "--no-plots",
                       "--policy", "sjf", "--predictor", f"learned:{model_dir}",
                       "--out", str(tmp_path / "r")])  # fmt: skip
        assert_clean_error(res, "reads the prompt text")
