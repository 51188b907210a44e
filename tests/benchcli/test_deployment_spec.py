"""One deployment spec from plan to serve to bench: written, read, shown, stored, refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.deployment import DeploymentSpec, EngineArgs, load_spec
from llmplan.errors import LlmplanError

runner = CliRunner()
TRACE = "synthetic:n=12,rate=4"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real console entry point (exit codes and stderr as a user sees them)."""
    env = {**os.environ, "COLUMNS": "200"}
    code = "from llmplan.cli.app import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("plan")
    res = runner.invoke(app, ["plan", "--model", "llama-3.1-8b", "--topology", "preset:dgx-h100",
                              "--out", str(d / "p.json")], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    return d / "p.json"


def test_plan_out_writes_a_spec_that_round_trips(plan_file: Path, tmp_path: Path) -> None:
    raw = json.loads(plan_file.read_text())
    assert raw["deployment"]["kind"] == "llmplan-deployment"
    spec = load_spec(plan_file)
    assert spec.model == "llama-3.1-8b" and spec.topology == "preset:dgx-h100"
    # The engine limits are the ones the plan's `vllm serve` line serves with (one source).
    from llmplan.plan.types import Plan
    from llmplan.plan.vllm import vllm_command

    line = vllm_command(Plan.from_dict({k: v for k, v in raw.items() if k != "deployment"}))[0].split()
    flag = {line[i]: line[i + 1] for i in range(len(line) - 1) if line[i].startswith("--")}
    assert (spec.engine.max_num_seqs, spec.engine.max_model_len) == (
        int(flag["--max-num-seqs"]), int(flag["--max-model-len"]))
    assert spec.engine == EngineArgs(max_num_seqs=32, max_model_len=512 + 256)  # the plan's defaults
    assert [i.gpus for i in spec.instances] == [[g for s in i["stages"] for g in s["gpus"]]
                                               for i in raw["instances"]]  # fmt: skip
    spec.save(tmp_path / "spec.json")
    again = load_spec(tmp_path / "spec.json")
    assert again == spec and again.to_dict() == spec.to_dict()


@pytest.mark.parametrize(
    "content,msg",
    [
        ("{", "not valid JSON"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0"}], "colour": 1}', "unknown field(s) colour"),
        ('{"model": "llama-tiny", "instances": []}', "no instances"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0", "role": "boss"}]}', "role 'boss'"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0"}], "engine": {"max_num_seqs": 0}}',
         "max_num_seqs must be a positive integer"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0"}], "engine": {"policy": "lifo"}}',
         "policy 'lifo' is unknown"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0"}], "weight_dtype": "fp3"}', "weight_dtype"),
        ('{"model": "llama-tiny", "instances": [{"name": "i0"}], "version": 99}', "newer than this llmplan"),
    ],
)
def test_bad_spec_files_are_refused_in_one_line(tmp_path: Path, content: str, msg: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(LlmplanError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        load_spec(f)


@pytest.mark.slow
def test_bad_config_through_the_cli_is_exit_2_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"model": "llama-tiny", "instances": [], "x": 1}')
    for cmd in (["bench", "--config", "bad.json", "-n", "3"], ["serve", "--config", "bad.json"],
                ["bench", "--config", "missing.json"]):  # fmt: skip
        res = _cli(*cmd, cwd=tmp_path)
        assert res.returncode == 2, (cmd, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --config"), res.stderr
        assert "Traceback" not in res.stderr


def test_bench_plan_simulates_the_plans_topology(plan_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["bench", "--plan", str(plan_file), "-n", "20", "--trace", TRACE, "--policy", "fcfs"]
    res = runner.invoke(app, [*args, "--no-plots", "--jobs", "1", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "report.json").read_text())["config"]
    assert cfg["cluster"]["topology"] == "preset:dgx-h100"
    dep = DeploymentSpec.from_dict(cfg["deployments"]["fcfs"])
    assert dep.topology == "preset:dgx-h100" and dep.model == "llama-3.1-8b"
    assert dep.device and "H100" in dep.device
    planned = load_spec(plan_file)
    assert [i.gpus for i in dep.instances] == [i.gpus for i in planned.instances]


@pytest.mark.slow  # several bench runs through the CLI; 24 s on the shared 2 cores
def test_bench_refuses_what_it_cannot_simulate_faithfully(plan_file: Path, tmp_path: Path) -> None:
    cases = [
        (["--plan", str(plan_file), "--topology", "preset:dgx-a100"], "drop --topology (the plan brings"),
        (["--plan", str(plan_file), "--model", "llama-2-13b"], "drop --model"),
        (["--simulate"], "give --target URL"),
        (["--config", str(plan_file), "--plan", str(plan_file)], "give one"),
        (["--scheduler", "sjf", "--policy", "fcfs"], "disagree"),
    ]
    for args, msg in cases:
        res = _cli("bench", "--trace", TRACE, "-n", "3", "--no-plots", "--out", str(tmp_path / "o"), *args,
                   cwd=tmp_path)  # fmt: skip
        assert res.returncode == 2 and msg in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.slow
def test_old_scheduler_spelling_works_with_a_deprecation_line(tmp_path: Path) -> None:
    res = _cli("bench", "--trace", TRACE, "-n", "3", "--no-plots", "--scheduler", "sjf", "--json",
               "--out", str(tmp_path / "o"), cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "deprecated: --scheduler sjf" in res.stderr
    assert list(json.loads(res.stdout)["runs"]) == ["sjf"]


def test_flags_override_the_config_and_defaults_match_serve(plan_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = runner.invoke(app, ["bench", "--config", str(plan_file), "-n", "10", "--trace", TRACE,
                              "--max-num-seqs", "7", "--no-chunked-prefill", "--no-plots", "--jobs", "1",
                              "--out", str(out)], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    # --config without --policy runs the spec's own policy, not a comparison.
    assert list(data["runs"]) == ["fcfs"]
    eng = data["config"]["deployments"]["fcfs"]["engine"]
    # Flags override the file's fields; the rest (the plan's 768-token context) is the file's.
    assert eng == asdict(EngineArgs()) | {"max_num_seqs": 7, "chunked_prefill": False, "max_model_len": 768}
    assert data["config"]["simulator"]["max_num_seqs"] == 7
    assert data["config"]["simulator"]["chunked_prefill"] is False


@pytest.mark.slow
def test_a_prompt_beyond_the_context_is_rejected_in_table_csv_and_json(tmp_path: Path) -> None:
    import pandas as pd

    trace = tmp_path / "long.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0,100000,10\n1,200,20\n2,300,30\n")
    out = tmp_path / "rep"
    res = _cli("bench", "--trace", f"file:{trace}", "--policy", "fcfs", "--no-plots", "--out", str(out),
               cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if "rejected / failed" in line)
    assert row.split("│")[2].strip() == "1 / 0"
    note = " ".join(res.stdout.split())
    assert "1 rejected, 0 failed (http 400: the prompt has 100000 tokens but the model's context is" in note
    df = pd.read_csv(out / "requests-fcfs.csv")
    rej = df[df["status"] == "rejected"]
    assert list(rej["prompt_tokens"]) == [100000]
    assert rej["reason"].iloc[0].startswith("http 400: the prompt has 100000 tokens")
    s = json.loads((out / "report.json").read_text())["runs"]["fcfs"]["summary"]
    assert (s["completed"], s["rejected"], s["failed"]) == (2, 1, 0)
    assert list(s["failure_reasons"]) == [rej["reason"].iloc[0]]


def test_a_spec_cluster_is_priced_only_where_a_price_is_known() -> None:
    from llmplan.bench.runner import BenchConfig, build_spec_cluster
    from llmplan.deployment import InstanceSpec

    def spec(source: str, device: str) -> DeploymentSpec:
        return DeploymentSpec(model="llama-3.1-8b", instances=[InstanceSpec("i0"), InstanceSpec("i1")],
                              device=device, source=source)  # fmt: skip

    # A planned GPU deployment: the roofline of its GPU, KV sized from its memory.
    cl = build_spec_cluster(BenchConfig(), spec("llmplan plan", "NVIDIA H100 80GB HBM3"))
    assert [s.name for s in cl.instances] == ["i0", "i1"] and all(s.num_blocks > 1000 for s in cl.instances)
    # A CPU has no roofline: its speed is measured (llmplan calibrate), not assumed.
    with pytest.raises(LlmplanError, match="no roofline for a CPU"):
        build_spec_cluster(BenchConfig(), spec("llmplan plan", "cpu"))
