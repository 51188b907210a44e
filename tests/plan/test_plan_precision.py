"""Precision (--weight-dtype / --kv-dtype), GPU precision peaks, the vLLM flags, context-length refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from plan_helpers import make_graph

from llmplan.errors import LlmplanError
from llmplan.models import get_model_spec
from llmplan.plan.costmodel import CostParams, GpuPerf, InstanceCost, decode_layer_time, prefill_layer_time
from llmplan.plan.pd import LengthStats, PDRequest, plan_pd
from llmplan.plan.planner import make_plan
from llmplan.plan.types import PlanWorkload
from llmplan.plan.vllm import vllm_command
from llmplan.topology import load_topology

# Precision is priced by the roofline (the operator model covers the measured 16-bit case only).
NO_OVH = CostParams(layer_overhead_s=0.0, iteration_overhead_s=0.0, cost_model="roofline")


def _gpu(preset: str) -> GpuPerf:
    g = load_topology(preset)
    return GpuPerf.from_attrs(g.nodes["GPU0"])


def test_weight_bytes_follow_the_weight_dtype() -> None:
    s = get_model_spec("llama-3.1-70b")
    bf16 = s.weight_bytes
    fp8 = s.with_precision("fp8").weight_bytes
    int4 = s.with_precision("int4").weight_bytes
    emb = s.embed_weight_bytes + s.head_weight_bytes  # embeddings and head stay bf16, as in vLLM
    assert fp8 - emb == pytest.approx((bf16 - emb) / 2, rel=1e-3)
    # int4: half a byte plus an fp16 scale and 4-bit zero per group of 128
    assert int4 - emb == pytest.approx((bf16 - emb) / 2 * (0.5 + 2.5 / 128), rel=1e-3)
    assert s.with_precision(None, "fp8").kv_bytes_per_token == s.kv_bytes_per_token // 2


def test_fp8_prefill_runs_at_the_fp8_peak_only_where_the_gpu_has_one() -> None:
    s = get_model_spec("llama-3.1-8b")
    f8 = s.with_precision("fp8")
    h100, a100 = _gpu("preset:dgx-h100"), _gpu("preset:dgx-a100")
    assert h100.fp8_flops == pytest.approx(2 * h100.flops, rel=1e-3) and a100.fp8_flops == 0
    # compute-bound prefill: the matmul part halves on H100 (attention stays bf16), not on A100
    lin = 2 * s.layer_linear_params * 4096
    attn = s.attn_flops_per_pair * 4096 * 4097 / 2
    assert prefill_layer_time(f8, h100, 4096, params=NO_OVH) == pytest.approx(
        (lin / h100.fp8_flops + attn / h100.flops) / 0.6
    )
    assert prefill_layer_time(f8, a100, 4096, params=NO_OVH) == pytest.approx(
        prefill_layer_time(s, a100, 4096, params=NO_OVH)
    )
    # memory-bound decode: fp8 weights are read in half the time on both
    for g in (h100, a100):
        assert decode_layer_time(f8, g, 1, 0, params=NO_OVH) < 0.55 * decode_layer_time(
            s, g, 1, 0, params=NO_OVH
        )


def test_instance_cost_agrees_with_the_layer_functions_at_fp8() -> None:
    s = get_model_spec("llama-3.1-8b").with_precision("fp8", "fp8")
    h100 = _gpu("preset:dgx-h100")
    inst = InstanceCost.single(s, h100, params=NO_OVH)
    layers = s.num_hidden_layers
    assert inst.prefill_time(2048) == pytest.approx(
        layers * prefill_layer_time(s, h100, 2048, params=NO_OVH) + _head(s, h100, 1), rel=1e-9
    )


def _head(s, g, n):
    from llmplan.plan.costmodel import head_time

    return head_time(s, g, n, params=NO_OVH)


def test_power_caps_scale_every_precision_peak() -> None:
    g = load_topology("preset:dgx-h100", {0: 350})
    d = g.nodes["GPU0"]
    assert d["fp8_tflops"] / 1978.9 == pytest.approx(d["bf16_tflops"] / 989.4, rel=1e-3)


@pytest.mark.parametrize(
    "model,wd,kvd,flags,absent",
    [
        ("llama-3.1-70b", "fp8", "fp8", ["--quantization fp8", "--kv-cache-dtype fp8"], []),
        ("llama-3.1-70b", "int4", "auto", ["--quantization awq"], ["--kv-cache-dtype"]),
        ("llama-3.1-70b", "int8", "auto", [], ["--quantization"]),
        ("deepseek-v3", None, "auto", [], ["--quantization"]),  # an fp8 checkpoint: vLLM reads its config
    ],
)
def test_vllm_line_uses_real_flags_and_never_an_invalid_dtype(model, wd, kvd, flags, absent) -> None:
    spec = get_model_spec(model).with_precision(wd, kvd)
    plan = make_plan(spec, load_topology("preset:dgx-h200"), "HE")
    cmd, note = vllm_command(plan)
    assert cmd is not None
    for f in flags:
        assert f in cmd
    for f in absent:
        assert f not in cmd
    dtype = cmd.split("--dtype ")[1].split()[0]
    assert dtype in ("bfloat16", "float16")
    if wd == "int8":
        assert "W8A8 checkpoint" in note


def test_precision_the_gpu_cannot_run_is_refused() -> None:
    v100 = make_graph([{"memory_gib": 32.0, "bf16_tflops": 125.0, "hbm_gbps": 900.0, "name": "V100"}] * 2, {})
    for n in v100.nodes:
        v100.nodes[n]["sm"] = 70
        v100.nodes[n]["int8_tops"] = 0.0
    spec = get_model_spec("llama-2-7b")  # fp16 checkpoint: fine on V100
    assert make_plan(spec, v100, "HE").num_gpus >= 1
    for wd, kv, needle in (
        ("fp8", "auto", "cannot run fp8"),
        ("int8", "auto", "no INT8"),
        (None, "fp8", "fp8 KV"),
    ):
        with pytest.raises(LlmplanError, match=needle) as e:
            make_plan(spec.with_precision(wd, kv), v100, "HE")
        assert "\n" not in str(e.value)
    with pytest.raises(LlmplanError, match="not one of"):
        spec.with_precision("int3")
    with pytest.raises(LlmplanError, match="--kv-dtype"):
        spec.with_precision(None, "int4")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_context_longer_than_the_model_is_refused_naming_both_numbers() -> None:
    out = _cli("plan", "--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--input-len", "100000")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "100256" in out.stderr and "4096" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = _cli("plan", "--model", "llama-2-7b", "--topology", "preset:dgx-h100", "--max-model-len", "8192")
    assert out.returncode == 2 and "8192" in out.stderr and "4096" in out.stderr
    out = _cli(
        "plan", "--model", "llama-3.1-8b", "--topology", "preset:dgx-h100", "--max-model-len", "1024",
        "--input-len", "1000", "--output-len", "100",
    )  # fmt: skip
    assert out.returncode == 2 and "1100" in out.stderr and "1024" in out.stderr


def test_vllm_max_model_len_is_the_requested_limit_and_never_above_the_model() -> None:
    spec = get_model_spec("llama-3.1-8b")
    plan = make_plan(spec, load_topology("preset:dgx-h100"), "HE", workload=PlanWorkload(max_model_len=32768))
    assert "--max-model-len 32768" in vllm_command(plan)[0]
    plan = make_plan(get_model_spec("llama-2-7b"), load_topology("preset:dgx-h100"), "HE",
                     workload=PlanWorkload(input_len=3000, output_len=1096))  # fmt: skip
    assert "--max-model-len 4096" in vllm_command(plan)[0]


def test_pd_refuses_requests_longer_than_the_model() -> None:
    stats = LengthStats(np.array([100, 5000]), np.array([10, 10]), rate=1.0)
    with pytest.raises(LlmplanError, match="5010 tokens exceeds llama-2-7b's max_position_embeddings 4096"):
        plan_pd(get_model_spec("llama-2-7b"), load_topology("preset:dgx-h100"), stats, PDRequest())


def test_plan_json_round_trips_precision(tmp_path) -> None:
    out = tmp_path / "p.json"
    r = _cli(
        "plan", "--model", "llama-3.1-70b", "--topology", "preset:dgx-h100", "--weight-dtype", "fp8",
        "--kv-dtype", "fp8", "--mode", "HE", "--out", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["model_spec"]["weight_dtype"] == "fp8" and d["model_spec"]["kv_dtype"] == "fp8"
    r = _cli("plan", "--plan", str(out))
    assert "--quantization fp8" in r.stdout.replace("\n", " ")


# ---- tensor x pipeline x expert parallelism ------------------------------------------------------


def test_llama_70b_lr_on_dgx_h100_is_tp8() -> None:
    out = _cli("plan", "--model", "llama-3.1-70b", "--topology", "preset:dgx-h100", "--mode", "LR")
    assert out.returncode == 0, out.stderr
    flat = " ".join(out.stdout.split())
    assert "--tensor-parallel-size 8 --pipeline-parallel-size 1" in flat


def test_tp_plan_prices_per_gpu_memory_and_beats_pp_on_decode() -> None:
    spec = get_model_spec("llama-3.1-70b")
    g = load_topology("preset:dgx-h100")
    tp8 = make_plan(spec, g, "LR")
    pp8 = make_plan(spec, g, "LR", tp_degrees=(1,))
    assert tp8.metrics["tp"] == 8 and pp8.metrics["tp"] == 1
    st = tp8.stages[0]
    assert st.weights_gib == pytest.approx(spec.weight_bytes / 8 / 2**30, rel=1e-3)  # weights split 8 ways
    assert tp8.metrics["tpot_s"] < pp8.metrics["tpot_s"] / 3  # TP divides decode; PP only pipelines prompts
    # the simulator's instance cost of the TP plan agrees with the planner's decode step
    inst = InstanceCost.from_plan(tp8, g)
    assert inst.num_gpus == 8


def test_moe_with_fp8_experts_too_thin_for_tp_uses_expert_parallelism() -> None:
    spec = get_model_spec("qwen3-30b-a3b").with_precision("fp8")  # 768 / 8 = 96: not whole 128-blocks
    plan = make_plan(spec, load_topology("preset:dgx-h100"), "LR", tp_degrees=(8,))
    cmd, _ = vllm_command(plan)
    assert plan.metrics["tp"] == 8 and plan.metrics["expert_parallel"] and "--enable-expert-parallel" in cmd
    assert any("EP 8" in line for line in plan.explanation)
    tp4 = make_plan(spec, load_topology("preset:dgx-h100"), "LR", tp_degrees=(4,))  # 768 / 4 = 192
    assert tp4.metrics["expert_parallel"]  # 192 is not a multiple of 128 either
    tp2 = make_plan(spec, load_topology("preset:dgx-h100"), "LR", tp_degrees=(2,))  # 384 = 3 blocks
    assert not tp2.metrics["expert_parallel"]
    bf16 = make_plan(get_model_spec("qwen3-30b-a3b"), load_topology("preset:dgx-h100"), "LR")
    assert not bf16.metrics["expert_parallel"] and "--enable-expert-parallel" not in vllm_command(bf16)[0]


def test_tp_degrees_that_do_not_divide_the_heads_are_not_planned() -> None:
    from llmplan.plan.problem import tp_infeasible_reason

    assert tp_infeasible_reason(get_model_spec("opt-13b"), 8) is None  # 40 heads
    assert "heads" in tp_infeasible_reason(get_model_spec("qwen2.5-7b"), 8)  # 28 heads
    plan = make_plan(get_model_spec("qwen2.5-7b"), load_topology("preset:dgx-h100"), "LR")
    assert plan.metrics["tp"] in (1, 2, 4)


def test_16_bit_weight_dtypes_set_the_served_dtype() -> None:
    spec = get_model_spec("llama-3.1-8b")  # a bf16 checkpoint
    fp16 = spec.with_precision("fp16")
    assert fp16.dtype == "float16" and fp16.weight_bytes == spec.weight_bytes
    plan = make_plan(fp16, load_topology("preset:dgx-h100"), "HE")
    assert "--dtype float16" in vllm_command(plan)[0]
    v3 = get_model_spec("deepseek-v3").with_precision("bf16")  # an fp8 checkpoint asked for in bf16
    assert (
        v3.weight_precision == "bf16" and v3.weight_bytes > 1.9 * get_model_spec("deepseek-v3").weight_bytes
    )


def test_int4_on_a100_is_weight_only() -> None:
    s = get_model_spec("llama-3.1-70b")
    a100 = _gpu("preset:dgx-a100")
    i4 = s.with_precision("int4")
    # compute-bound prefill: same as bf16 (no int4 tensor path in vLLM's AWQ/GPTQ kernels)
    assert prefill_layer_time(i4, a100, 4096, params=NO_OVH) == pytest.approx(
        prefill_layer_time(s, a100, 4096, params=NO_OVH)
    )
    # memory-bound decode reads ~a quarter of the bytes
    ratio = decode_layer_time(i4, a100, 1, 0, params=NO_OVH) / decode_layer_time(s, a100, 1, 0, params=NO_OVH)
    assert 0.25 < ratio < 0.3


@pytest.mark.slow
def test_cli_refuses_a_precision_the_gpus_cannot_run(tmp_path) -> None:
    out = _cli("topology", "--source", "preset:2x-rtx4090", "--json")
    assert out.returncode == 0, out.stderr
    topo = json.loads(out.stdout)
    for g in topo["gpus"]:  # the same bed with V100s (compute capability 7.0, no fp8/int8 tensor path)
        g.update(name="Tesla V100-SXM2-32GB", model="V100-SXM2-32GB", memory_gib=32.0, bf16_tflops=125.0,
                 fp8_tflops=0.0, int8_tops=0.0, sm=70, hbm_gbps=900.0)  # fmt: skip
    path = tmp_path / "v100.json"
    path.write_text(json.dumps(topo))
    ok = _cli("plan", "--model", "llama-2-7b", "--topology", f"file:{path}", "--mode", "HE")
    assert ok.returncode == 0, ok.stderr
    for flags, needle in (
        (["--weight-dtype", "fp8"], "cannot run fp8 weights"),
        (["--weight-dtype", "int8"], "no INT8 tensor path"),
        (["--kv-dtype", "fp8"], "no fp8 KV cache kernels"),
    ):
        r = _cli("plan", "--model", "llama-2-7b", "--topology", f"file:{path}", *flags)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, (flags, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
