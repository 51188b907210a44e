"""`llmplan plan` end to end: the three modes on 4x-rtx3090, errors, --out/--plan files, --pd."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from llmplan.bench.pd_validate import validate_in_simulator
from llmplan.cli.app import app
from llmplan.errors import InfeasibleError, LlmplanError
from llmplan.models import get_model_spec
from llmplan.plan.pd import LengthStats, PDRequest, load_length_stats, plan_pd
from llmplan.plan.types import Plan
from llmplan.topology import load_topology

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["plan", *args], catch_exceptions=False)


def test_three_modes_give_three_different_explained_plans_on_4x3090() -> None:
    plans = {}
    for mode in ("HE", "LR", "HELR"):
        r = _run("--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", mode, "--json")
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        plans[mode] = d
        assert d["explanation"] and d["mode"] == mode
        covered = [i for st in d["instances"][0]["stages"] for i in range(st["layer_start"], st["layer_end"])]
        assert covered == list(range(28))
    gpus = {m: tuple(g for st in d["instances"][0]["stages"] for g in st["gpus"]) for m, d in plans.items()}
    assert len(set(gpus.values())) == 3, gpus
    n = {m: d["metrics"]["gpus"] for m, d in plans.items()}
    lat = {m: d["metrics"]["batch_latency_s"] for m, d in plans.items()}
    assert n["HE"] < n["HELR"] < n["LR"]
    assert lat["LR"] < lat["HELR"] < lat["HE"]
    # HE uses the fastest (350 W) card alone
    assert gpus["HE"] == ("GPU0",)


def test_human_output_has_table_vllm_line_and_device_map(tmp_path) -> None:
    out = tmp_path / "plan.json"
    r = _run("--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--mode", "HE", "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "vllm serve meta-llama/Llama-2-7b-hf" in r.output and "CUDA_VISIBLE_DEVICES=" in r.output
    assert "device_map" in r.output
    plan = Plan.load(out)
    assert plan.model == "llama-2-7b" and plan.num_gpus == 1


def test_model_that_fits_nowhere_is_one_line_with_need_shortfall_and_fix() -> None:
    with pytest.raises(InfeasibleError) as e:
        _run("--model", "llama-2-70b", "--topology", "preset:4x-rtx3090")
    msg = str(e.value)
    assert "\n" not in msg
    assert "needs 128.5 GiB weights" in msg and "shortfall" in msg and "add 3 GPUs" in msg


def test_kv_reserve_infeasibility_suggests_a_smaller_batch() -> None:
    with pytest.raises(InfeasibleError) as e:
        _run(
            "--model",
            "llama-2-7b",
            "--topology",
            "preset:2x-rtx4090",
            "--max-batch",
            "256",
            "--input-len",
            "2048",
            "--output-len",
            "2048",
        )
    msg = str(e.value)
    assert "lower --max-batch to" in msg
    fix = int(msg.split("lower --max-batch to ")[1].split()[0])
    ok = _run(
        "--model",
        "llama-2-7b",
        "--topology",
        "preset:2x-rtx4090",
        "--max-batch",
        str(fix),
        "--input-len",
        "2048",
        "--output-len",
        "2048",
        "--json",
    )
    assert ok.exit_code == 0  # the suggested change really fits
    with pytest.raises(InfeasibleError):
        _run(
            "--model",
            "llama-2-7b",
            "--topology",
            "preset:2x-rtx4090",
            "--max-batch",
            str(fix + 1),
            "--input-len",
            "2048",
            "--output-len",
            "2048",
        )


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(LlmplanError, match="--gpus"):
        _run("--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--gpus", "0,x")
    with pytest.raises(LlmplanError, match="not in the topology"):
        _run("--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--gpus", "0,9")
    with pytest.raises(InfeasibleError, match="unknown mode"):
        _run("--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--mode", "FAST")
    with pytest.raises(LlmplanError, match="unknown model"):
        _run("--model", "gpt-17", "--topology", "preset:dgx-h100")


def test_gpu_subset_is_respected() -> None:
    r = _run(
        "--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", "LR", "--gpus", "2,3", "--json"
    )
    d = json.loads(r.output)
    assert {g for st in d["instances"][0]["stages"] for g in st["gpus"]} <= {"GPU2", "GPU3"}


# ---- P:D -------------------------------------------------------------------------------------


def test_pd_plan_meets_the_target_and_beats_its_runner_ups() -> None:
    G = load_topology("preset:dgx-h100")
    spec = get_model_spec("llama-3.1-8b")
    stats = LengthStats(np.array([512.0, 1024.0, 2048.0]), np.array([128.0, 256.0, 64.0]), rate=10.0)
    req = PDRequest(slo_ttft_s=1.0, slo_tpot_s=0.05, attainment=0.9)
    res = plan_pd(spec, G, stats, req)
    b = res.best
    assert b.attainment >= 0.9 and b.goodput > 0 and b.gpus <= 8
    assert all(o.per_gpu <= b.per_gpu + 1e-12 for o in res.runners_up)
    roles = [i.role for i in res.plan.instances]
    assert roles.count("prefill") == b.n_prefill and roles.count("decode") == b.n_decode
    used = [g for i in res.plan.instances for g in i.gpus]
    assert len(used) == len(set(used)) == b.gpus  # disjoint GPUs
    assert res.at_rate is not None and res.at_rate["attainment"] >= 0.9  # 10 req/s is well below goodput
    # a tighter TTFT SLO can only lower the best goodput per GPU (every layout's goodput is monotone)
    tight = plan_pd(spec, G, stats, PDRequest(slo_ttft_s=0.3, slo_tpot_s=0.05))
    assert tight.best.per_gpu <= b.per_gpu + 1e-9
    # --validate replays the plan in the simulator (same cost model) at the predicted goodput
    val = validate_in_simulator(res, spec, G, stats, req, num_requests=400).validation
    assert val is not None and 0.0 <= val["simulated_attainment"] <= 1.0 and val["requests"] == 400


def test_pd_unmeetable_slo_names_the_slo_and_best_value() -> None:
    G = load_topology("preset:2x-rtx4090")
    spec = get_model_spec("llama-3.1-8b")
    stats = LengthStats(np.array([4096.0]), np.array([256.0]))
    with pytest.raises(InfeasibleError) as e:
        plan_pd(spec, G, stats, PDRequest(slo_ttft_s=0.01, slo_tpot_s=0.5))
    msg = str(e.value)
    assert msg.startswith("--slo-ttft 0.01 s cannot be met") and "at zero load" in msg
    with pytest.raises(InfeasibleError, match=r"--slo-tpot 0.0001 s cannot be met: .* s/token at batch 1"):
        plan_pd(spec, G, stats, PDRequest(slo_ttft_s=10, slo_tpot_s=1e-4))


def test_trace_loading_and_errors(tmp_path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0,100,10\n2023-11-16 18:15:47.0,200,20\n2023-11-16 18:15:48.0,300,0\n"
        "2023-11-16 18:15:50.0,400,40\n"
    )
    st = load_length_stats(csv)
    assert st.rate == pytest.approx(2 / 4.0)  # zero-output rows dropped; 3 requests over 4 s
    assert sorted(st.inputs.tolist()) == pytest.approx([100, 200, 400], abs=60)
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(LlmplanError, match="lacks columns"):
        load_length_stats(bad)
    with pytest.raises(LlmplanError, match="does not exist"):
        load_length_stats(tmp_path / "nope.csv")


def test_pd_cli_json_and_saved_plan(tmp_path) -> None:
    out = tmp_path / "pd.yaml"
    r = _run(
        "--model",
        "llama-3.1-8b",
        "--topology",
        "preset:dgx-h100",
        "--pd",
        "--slo-ttft",
        "1",
        "--slo-tpot",
        "0.05",
        "--input-len",
        "1024",
        "--output-len",
        "128",
        "--json",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["best"]["attainment"] >= 0.9 and ":" in d["best"]["ratio"]
    assert Plan.load(out).mode == "PD"


def test_saved_plan_is_shown_again_with_plan(tmp_path) -> None:
    out = tmp_path / "p.yaml"
    first = _run(
        "--model",
        "chatglm2-6b",
        "--topology",
        "preset:4x-rtx3090",
        "--mode",
        "LR",
        "--json",
        "--out",
        str(out),
    )
    again = _run("--plan", str(out), "--json")
    assert again.exit_code == 0
    assert json.loads(again.output) == json.loads(first.output)
    with pytest.raises(LlmplanError, match="--model"):
        _run("--topology", "preset:4x-rtx3090")


def test_power_caps_move_the_he_plan_off_the_throttled_card() -> None:
    base = json.loads(
        _run("--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--mode", "HE", "--json").output
    )
    capped = json.loads(
        _run(
            "--model",
            "chatglm2-6b",
            "--topology",
            "preset:4x-rtx3090",
            "--mode",
            "HE",
            "--power-cap",
            "0=100",
            "--json",
        ).output
    )
    assert base["instances"][0]["stages"][0]["gpus"] == ["GPU0"]
    assert capped["instances"][0]["stages"][0]["gpus"] == ["GPU1"]  # next fastest (300 W)
    with pytest.raises(LlmplanError, match="--power-cap"):
        _run("--model", "chatglm2-6b", "--topology", "preset:4x-rtx3090", "--power-cap", "0~100")


def test_pd_replicates_the_best_unit_to_serve_the_rate() -> None:
    G = load_topology("preset:dgx-h100-x8")
    spec = get_model_spec("llama-3.1-8b")
    unit = plan_pd(spec, G, LengthStats(np.array([1024.0]), np.array([256.0])), PDRequest(1.0, 0.05)).best
    want = 2.5 * unit.goodput
    res = plan_pd(
        spec, G, LengthStats(np.array([1024.0]), np.array([256.0]), rate=want), PDRequest(1.0, 0.05)
    )
    b = res.best
    assert b.replicas == 3 and b.ratio == unit.ratio and b.goodput >= want
    assert b.per_gpu == pytest.approx(unit.per_gpu)  # k copies: k times the goodput, same per GPU
    assert len(res.plan.instances) == b.n_prefill + b.n_decode


def test_pd_respects_the_gpu_budget() -> None:
    r = _run(
        "--model",
        "llama-3.1-8b",
        "--topology",
        "preset:dgx-h100",
        "--pd",
        "--slo-ttft",
        "1",
        "--slo-tpot",
        "0.05",
        "--max-gpus",
        "3",
        "--json",
    )
    d = json.loads(r.output)
    assert d["best"]["gpus"] <= 3 and all(o["gpus"] <= 3 for o in d["runners_up"])
