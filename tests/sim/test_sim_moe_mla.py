"""The simulator prices what the planner plans: MoE experts touched per batch, active-parameter
prefill, MLA latent KV; `llmplan bench` on an MoE model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.models import get_model_spec
from llmplan.plan.costmodel import BatchShape, CostParams, GpuPerf, InstanceCost
from llmplan.topology import load_topology

NO_OVH = CostParams(layer_overhead_s=0.0, iteration_overhead_s=0.0, cost_model="roofline")


def _h100() -> GpuPerf:
    return GpuPerf.from_attrs(load_topology("preset:dgx-h100").nodes["GPU0"])


def test_moe_decode_reads_only_the_experts_a_batch_touches() -> None:
    s = get_model_spec("mixtral-8x7b")
    g = _h100()
    inst = InstanceCost.single(s, g, tp=1, params=NO_OVH)
    expert = s.expert_params * s.dtype_bytes
    base = s.moe_layer_weight_bytes - s.num_experts * expert
    for b in (1, 4, 32):
        touched = 8 * (1 - (1 - 2 / 8) ** b)  # E * (1 - (1 - k/E)^B)
        kv = s.kv_bytes_per_token_layer * b  # context 0: the new tokens' KV
        act = 4 * s.hidden_size * 2 * b
        per_layer = (base + touched * expert + kv + act) / (g.mem_bw * 0.8)
        head = s.vocab_size * s.hidden_size * 2 / (g.mem_bw * 0.8)
        want = s.num_hidden_layers * per_layer + head
        assert inst.iteration_time(BatchShape(decode_seqs=b)) == pytest.approx(want, rel=1e-9), b
    # batch 1 reads 2 of 8 experts: far less than the whole model
    assert inst.iteration_time(BatchShape(decode_seqs=1)) < 0.4 * s.weight_bytes / (g.mem_bw * 0.8)


def test_moe_prefill_computes_active_parameters_only() -> None:
    s = get_model_spec("qwen3-30b-a3b")
    g = _h100()
    inst = InstanceCost.single(s, g, params=NO_OVH)
    t = 8192  # compute-bound: 2 * active params per token, not 2 * total
    lin = 2 * s.layer_active_params * t / (g.flops * 0.6)
    attn = s.attn_flops_per_pair * t * (t + 1) / 2 / (g.flops * 0.6)
    head = max(
        2 * s.vocab_size * s.hidden_size / (g.flops * 0.6),
        s.vocab_size * s.hidden_size * 2 / (g.mem_bw * 0.8),
    )
    assert inst.prefill_time(t) == pytest.approx(s.num_hidden_layers * (lin + attn) + head, rel=1e-6)
    assert s.layer_active_params < 0.12 * s.moe_layer_params


def test_mla_attention_reads_the_latent_kv() -> None:
    s = get_model_spec("deepseek-v2-lite")
    g = _h100()
    inst = InstanceCost.single(s, g, params=NO_OVH)
    ctx = 100_000
    t_long = inst.iteration_time(BatchShape(decode_seqs=1, decode_ctx=ctx))
    t_short = inst.iteration_time(BatchShape(decode_seqs=1, decode_ctx=0))
    latent = (512 + 64) * 2  # bytes per token per layer
    assert t_long - t_short == pytest.approx(s.num_hidden_layers * latent * ctx / (g.mem_bw * 0.8), rel=1e-6)
    assert inst.kv_capacity_tokens() * latent * s.num_hidden_layers < g.memory_bytes


def test_bench_runs_mixtral_on_dgx_h100_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = CliRunner().invoke(
        app,
        ["bench", "--jobs", "1", "--model", "mixtral-8x7b", "--topology", "preset:dgx-h100",
         "--trace", "synthetic:rate=4,n=80", "--policy", "fcfs", "--out", str(out), "--no-plots", "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    cluster = rep["config"]["cluster"]
    assert cluster["model"] == "mixtral-8x7b"
    # 87 GiB of bf16 weights: every instance is a TP group of >= 2 H100s, none a single GPU
    assert all(m["gpus"] >= 2 for m in cluster["plan_instance_metrics"])
    summary = rep["runs"]["fcfs"]["summary"]
    assert summary["completed"] + summary["rejected"] + summary["failed"] == 80 and summary["completed"] > 0
