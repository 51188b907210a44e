"""`--serving-engine` through the real CLI: plan and bench price each step with the chosen
engine's overhead (llmplan.opcost.engines), and the plan file, the deployment spec and
report.json name the engine."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.opcost.engines import engine_overhead

runner = CliRunner()
PLAN = ["plan", "--model", "llama-2-7b", "--topology", "preset:dgx-a100", "--mode", "HE", "--json"]


def _plan(*extra: str) -> dict:
    res = runner.invoke(app, [*PLAN, *extra], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_plan_prices_steps_with_the_chosen_engine(tmp_path: Path) -> None:
    vllm, sglang = _plan(), _plan("--serving-engine", "sglang", "--out", str(tmp_path / "p.json"))
    assert vllm["params"]["serving_engine"] == "vllm"  # the default: the `vllm serve` line's engine
    assert sglang["params"]["serving_engine"] == "sglang"
    assert vllm["instances"] == sglang["instances"]  # same placement (HE), different step price
    # One decode step carries the per-step overhead once: TPOT moves by exactly the difference.
    diff = engine_overhead("vllm").per_step_s - engine_overhead("sglang").per_step_s
    got = vllm["metrics"]["tpot_s"] - sglang["metrics"]["tpot_s"]
    assert abs(got - diff) < 1e-9, (got, diff)
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["params"]["serving_engine"] == "sglang"
    from llmplan.deployment import load_spec

    assert load_spec(tmp_path / "p.json").serving_engine == "sglang"
    text = runner.invoke(app, [*PLAN[:-1], "--serving-engine", "trtllm"], catch_exceptions=False).output
    assert "priced for serving engine trtllm" in text


def test_unknown_engine_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    import pytest

    from llmplan.cli.app import main

    bench = ["bench", "--trace", "synthetic:n=5", "--no-plots", "--out", str(tmp_path / "r")]
    for cmd in (PLAN, bench):
        with pytest.raises(SystemExit) as exc:  # the console script's own handler
            main([*cmd, "--serving-engine", "tgi"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2
        assert err == ["error: --serving-engine 'tgi' is unknown; use one of llmplan|vllm|sglang|trtllm"]
    assert not (tmp_path / "r").exists()  # refused before any work


def _bench(out: Path, *extra: str) -> dict:
    args = ["bench", "--jobs", "1", "--trace", "synthetic:rate=2,n=40", "--policy", "fcfs",
            "--instances", "1", "--no-plots", "--energy", "off", "--out", str(out), *extra]  # fmt: skip
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text())


def test_bench_records_and_applies_the_engine(tmp_path: Path) -> None:
    default = _bench(tmp_path / "v")
    llm = _bench(tmp_path / "l", "--serving-engine", "llmplan")
    eng = default["config"]["cluster"]["serving_engine"]
    assert eng["serving_engine"] == "vllm"
    assert eng["per_step_overhead_s"] == engine_overhead("vllm").per_step_s
    assert eng["source"] and eng["measured"] is False
    e2 = llm["config"]["cluster"]["serving_engine"]
    assert e2["serving_engine"] == "llmplan" and e2["measured"] is True
    assert llm["config"]["bench"]["serving_engine"] == "llmplan"
    assert llm["config"]["deployments"]["fcfs"]["serving_engine"] == "llmplan"
    assert default["config"]["deployments"]["fcfs"]["serving_engine"] == "vllm"
    # 0.9 ms less per step: every decode step is faster, so TPOT drops.
    tv = default["runs"]["fcfs"]["summary"]["latency"]["tpot_s"]["p50"]
    tl = llm["runs"]["fcfs"]["summary"]["latency"]["tpot_s"]["p50"]
    assert tl < tv - 0.5e-3, (tl, tv)


def test_a_plan_files_engine_is_used_unless_overridden(tmp_path: Path) -> None:
    _plan("--serving-engine", "sglang", "--out", str(tmp_path / "p.json"))
    rep = _bench(tmp_path / "a", "--plan", str(tmp_path / "p.json"))
    assert rep["config"]["cluster"]["serving_engine"]["serving_engine"] == "sglang"
    rep = _bench(tmp_path / "b", "--plan", str(tmp_path / "p.json"), "--serving-engine", "vllm")
    assert rep["config"]["cluster"]["serving_engine"]["serving_engine"] == "vllm"


def test_systems_comparison_says_it_prices_vllm_and_refuses_another_engine(tmp_path: Path, capsys) -> None:
    import pytest

    from llmplan.cli.app import main

    args = ["bench", "--jobs", "1", "--trace", "synthetic:rate=2,n=20", "--compare", "vllm,distserve",
            "--no-plots", "--energy", "off", "--out", str(tmp_path / "r")]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        main([*args, "--serving-engine", "sglang"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prices every system's steps with vLLM's overhead" in err[0]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert rep["config"]["cluster"]["serving_engine"]["serving_engine"] == "vllm"
