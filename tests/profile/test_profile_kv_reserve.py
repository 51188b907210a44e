"""The planner takes its KV reserve from a resource profile (`llmplan plan --kv-profile`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import LlmplanError
from llmplan.models import get_model_spec
from llmplan.profile.kv_reserve import kv_reserve_from_profile
from llmplan.profile.profiler import ResourceProfiler

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_prof import synthetic_profile  # noqa: E402

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


LONG = "Summarize in one sentence: " + "the plant ran all night and the night shift logged it. " * 30


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prof") / "p"
    ResourceProfiler.fit(synthetic_profile(150, seed=0), k=5, seed=0, n_estimators=30).save(out)
    return out


def _prompts(path: Path, task: str, text: str, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"id": f"{task}-{i}", "task": task, "prompt": text}) + "\n"
                            for i in range(n)))
    return path


def _plan(profile_dir: Path, prompts: Path) -> dict:
    res = CliRunner().invoke(app, [
        "plan", "--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--mode", "HE", "--max-batch", "2",
        "--kv-profile", str(profile_dir), "--kv-prompts", str(prompts), "--json",
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_heavier_predicted_memory_books_a_larger_reserve(profile_dir, tmp_path) -> None:
    chat = _plan(profile_dir, _prompts(tmp_path / "chat.jsonl", "chat", "hi there, how are you?"))
    summ = _plan(profile_dir, _prompts(tmp_path / "summ.jsonl", "summarization", LONG))
    per_chat = chat["workload"]["kv_tokens_per_request"]
    per_summ = summ["workload"]["kv_tokens_per_request"]
    assert per_summ > 5 * per_chat > 0
    # the reserve is what the function computes, converted to the plan model's KV tokens
    res = kv_reserve_from_profile(profile_dir, [LONG] * 6, tasks=["summarization"] * 6)
    assert per_summ == res.tokens_per_request(get_model_spec("llama-2-7b").kv_bytes_per_token)
    kv = lambda p: sum(s["kv_gib"] for inst in p["instances"] for s in inst["stages"])  # noqa: E731
    assert kv(summ) > kv(chat)


def test_reserve_errors_name_the_fix(profile_dir, tmp_path) -> None:
    res = CliRunner().invoke(app, ["plan", "--model", "llama-2-7b", "--topology", "preset:4x-rtx3090",
                                   "--kv-prompts", str(tmp_path / "x.jsonl")])
    assert isinstance(res.exception, LlmplanError) and "only applies with --kv-profile" in str(res.exception)
    res = CliRunner().invoke(app, ["plan", "--model", "llama-2-7b", "--topology", "preset:4x-rtx3090",
                                   "--kv-profile", str(tmp_path / "none")])
    assert isinstance(res.exception, LlmplanError) and "no fitted profiler" in str(res.exception)
    with pytest.raises(LlmplanError, match="--kv-quantile"):
        kv_reserve_from_profile(profile_dir, ["hi"], quantile=1.5)
