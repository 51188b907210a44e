"""`llmplan bench --compare vllm,distserve,banaserve`: whole systems on one workload."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app

runner = CliRunner()


def _bench(*args: str):
    return runner.invoke(app, ["bench", "--jobs", "1", *args])


def test_three_systems_on_one_workload(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    # A 5x rate on the first 150 requests loads the 2:2 split enough for the controller to act.
    res = _bench("--max-requests", "150", "--rate-scale", "5", "--compare", "vllm,distserve,banaserve",
                 "--out", str(out), "--no-plots")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert list(data["runs"]) == ["vllm", "distserve", "banaserve"]
    frames = {}
    for label, run in data["runs"].items():
        df = pd.read_csv(out / run["file"]).sort_values("rid")
        assert sorted(df["rid"]) == list(range(150)), label  # every request accounted for
        assert set(df["status"]) <= {"ok", "rejected", "failed"}
        assert df.loc[df["status"] != "ok", "reason"].notna().all()
        assert run["summary"]["requests"] == 150
        frames[label] = df
    # the identical workload: same arrivals and lengths in every column
    for col in ("arrival_s", "prompt_tokens", "output_tokens", "slo_e2e_s"):
        for label in ("distserve", "banaserve"):
            assert frames[label][col].tolist() == frames["vllm"][col].tolist(), (label, col)
    sim = data["config"]["simulator"]
    layout = data["config"]["cluster"]["systems"]
    assert layout["gpus"] == 4 and layout["pd"] == [2, 2]
    assert sim["vllm"]["router"] == "round-robin" and sim["vllm"]["disaggregation"] is None
    assert sim["distserve"]["router"] == "least-loaded" and sim["distserve"]["disaggregation"] == [2, 2]
    assert sim["banaserve"]["router"] == "banaserve" and sim["banaserve"]["disaggregation"] == [2, 2]
    assert sim["banaserve"]["tick_hooks"] == ["ControllerHook"] and not sim["distserve"]["tick_hooks"]
    assert "migrations_applied" in sim["banaserve"] and "migrations_applied" not in sim["distserve"]
    assert {s["instances"] for s in sim.values()} == {4}  # the same GPUs for all three
    assert len({s["policy"] for s in sim.values()}) == 1  # and the same batch policy
    assert "banaserve" in res.output and "distserve" in res.output


def test_systems_split_and_sweep(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = _bench("--max-requests", "80", "--compare", "vllm,banaserve", "--disaggregation", "1:2",
                 "--sweep-rate", "2,8", "--model", "opt-13b", "--out", str(out), "--no-plots")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert data["config"]["cluster"]["systems"]["pd"] == [1, 2]
    assert data["config"]["simulator"]["banaserve"]["model"] == "opt-13b"
    assert data["config"]["simulator"]["vllm"]["instances"] == 3
    pts = {(p["label"], p["rate_rps"]) for p in data["sweep"]["points"]}
    assert pts == {("vllm", 2.0), ("vllm", 8.0), ("banaserve", 2.0), ("banaserve", 8.0)}
    assert set(data["sweep"]["goodput_distserve"]) == {"vllm", "banaserve"}
    tok = {}
    for p in data["sweep"]["points"]:
        assert p["summary"]["requests"] == 80  # every request of every sweep point accounted for
        tok[p["label"], p["rate_rps"]] = p["summary"]["output_tokens_per_s"]
    # the throughput-vs-rate table states BanaServe over vLLM as the saved figures give it
    md = (out / "report.md").read_text()
    assert "| req/s | vllm tok/s | banaserve tok/s | banaserve ÷ vllm |" in md
    row = next(ln for ln in md.split("## Output throughput vs rate")[1].splitlines() if ln.startswith("| 8 "))
    assert row.split("|")[-2].strip() == f"{tok['banaserve', 8.0] / tok['vllm', 8.0]:.2f}x"
    assert "banaserve ÷ vllm" in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compare", "vllm,fcfs"], "mixes systems"),
        (["--compare", "vllm,banaserve", "--instances", "1"], "need >= 2 GPUs"),
        (["--compare", "distserve", "--disaggregation", "2:2", "--instances", "3"], "drop --instances"),
        (["--compare", "vllm,distserve", "--router", "jsq"], "drop --router"),
        (["--compare", "banaserve,sjf"], "mixes systems"),
    ],
)
def test_bad_system_requests_fail_in_one_line(
    azure_data_dir: Path, tmp_path: Path, args: list[str], needle: str
) -> None:
    from llmplan.errors import LlmplanError

    res = _bench("--max-requests", "20", "--out", str(tmp_path / "r"), "--no-plots", *args)
    # main() prints an LlmplanError as one red line and exits 2 (CliRunner hands us the error)
    assert isinstance(res.exception, LlmplanError), res.output
    msg = str(res.exception)
    assert needle in msg and "\n" not in msg, msg
    assert not (tmp_path / "r" / "report.json").exists()


def test_help_names_the_systems() -> None:
    res = runner.invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for name in ("vllm", "distserve", "banaserve"):
        assert name in res.output
