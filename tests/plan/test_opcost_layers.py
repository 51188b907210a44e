"""MoE, MLA and quantised weights through the operator model, against hand computations."""

from __future__ import annotations

import math

import pytest

from llmplan.models import get_model_spec
from llmplan.opcost.layers import (
    attention_general,
    gemm_ops,
    layer_nonattn_general,
    layer_ops_general,
    weight_precision,
)
from llmplan.opcost.ops import GemmParams, GpuOpParams, OpModel, SmallOpParams
from llmplan.opcost.stage import grounded, layer_time_ops, op_model_for
from llmplan.plan.costmodel import GIB, CostParams, GpuPerf, InstanceCost

H100 = GpuPerf("H100-SXM", 989.4e12, 3350e9, 80 * GIB, fp8_flops=1978.9e12, int8_flops=1978.9e12, sm=90)
A100 = GpuPerf("A100-SXM-80GB", 312e12, 2039e9, 80 * GIB, fp8_flops=0.0, int8_flops=624e12, sm=80)
# Round numbers so every term can be computed by hand: p = 1 sums compute and memory.
LAUNCH, EFF_C, EFF_M, M_HALF = 5e-6, 0.5, 0.8, 4.0
SIMPLE = GpuOpParams(GemmParams(LAUNCH, EFF_C, EFF_M, M_HALF, 1.0, 0.0), {"add": SmallOpParams(1e-6, 0.5)})
PEAK, BW = 1e15, 2e12


def _hand_gemm(m: float, n: float, k: float, wbytes: float = 2, peak: float = PEAK) -> float:
    comp = 2 * m * n * k / (peak * EFF_C) * (1 + M_HALF / m)
    mem = (2 * (m * k + m * n) + wbytes * k * n) / (BW * EFF_M)
    return LAUNCH + comp + mem


def _om() -> OpModel:
    return OpModel("X", PEAK, BW, SIMPLE, sms=None)


def test_routed_experts_are_one_grouped_gemm_over_the_tokens_each_expert_gets() -> None:
    om = _om()
    e, k, b, n, kk = 8, 2, 4, 2048, 1024
    p = 1 - (1 - k / e) ** b  # P(an expert is touched) = 1 - 0.75^4
    assert p == pytest.approx(0.68359375)
    per = b * k / (e * p)  # tokens per touched expert: B k spread over E p experts
    want = LAUNCH + e * p * (_hand_gemm(per, n, kk) - LAUNCH)
    assert om.expert_gemm_time("x", b, n, kk, e, k) == pytest.approx(want, rel=1e-12)
    # EP over 4 GPUs: each holds 2 experts, each touched with the same probability
    want_ep = LAUNCH + 2 * p * (_hand_gemm(per, n, kk) - LAUNCH)
    assert om.expert_gemm_time("x", b, n, kk, e, k, local_experts=2) == pytest.approx(want_ep, rel=1e-12)
    # a big batch touches every expert, each with B k / E tokens
    big = om.expert_gemm_time("x", 4096, n, kk, e, k)
    assert big == pytest.approx(LAUNCH + e * (_hand_gemm(4096 * k / e, n, kk) - LAUNCH), rel=1e-9)
    # one token reads k experts' weights, not E
    one = om.expert_gemm_time("x", 1, n, kk, e, k)
    assert one == pytest.approx(LAUNCH + k * (_hand_gemm(1, n, kk) - LAUNCH), rel=1e-12)


def test_quantised_weights_read_fewer_bytes_and_run_at_their_peak() -> None:
    om = _om()
    m, n, k = 16, 4096, 4096
    assert om.gemm_time("o", m, n, k) == pytest.approx(_hand_gemm(m, n, k), rel=1e-12)
    fp8 = om.gemm_time("o", m, n, k, weight_bytes=1.0, peak=2 * PEAK)
    assert fp8 == pytest.approx(_hand_gemm(m, n, k, 1.0, 2 * PEAK), rel=1e-12)
    w4 = om.gemm_time("o", m, n, k, weight_bytes=0.5 + 1 / 64)  # int4: compute at the 16-bit rate
    assert w4 == pytest.approx(_hand_gemm(m, n, k, 0.5 + 1 / 64), rel=1e-12)
    assert w4 < fp8 < om.gemm_time("o", m, n, k)  # decode-sized: weight bytes decide


def test_precision_follows_the_gpus_tensor_paths() -> None:
    base = get_model_spec("llama-3.1-8b")
    fp8 = base.with_precision("fp8", None)
    assert weight_precision(fp8, H100).peak == H100.fp8_flops  # W8A8 on Hopper
    w = weight_precision(fp8, A100)  # no fp8 tensor path: weight-only, 16-bit compute
    assert (w.peak, w.kind) == (A100.flops, "weight-only") and w.weight_bytes == fp8.weight_param_bytes
    int4 = base.with_precision("int4", None)
    assert weight_precision(int4, H100).peak == H100.flops
    assert weight_precision(base, H100).kind == "16-bit"
    assert grounded(base) and not grounded(fp8) and not grounded(get_model_spec("mixtral-8x7b"))


def test_mla_projections_and_moe_shapes_by_hand() -> None:
    ds = get_model_spec("deepseek-v3")  # h 7168, 128 heads, q_lora 1536, kv_lora 512, nope/rope/v 128/64/128
    ops = gemm_ops(ds, tp=8, moe=True)
    assert ops["mla_q_a"] == (1536, 7168)  # replicated down-projection
    assert ops["mla_q_b"] == (128 * 192 / 8, 1536)
    assert ops["mla_kv_a"] == (512 + 64, 7168)
    assert ops["mla_kv_b"] == (128 * (128 + 128) / 8, 512)
    assert ops["attn_post_proj"] == (7168, 128 * 128 / 8)
    assert ops["shared_up_proj"] == (2 * 2048 / 8, 7168)  # one shared expert, TP-sliced
    assert gemm_ops(ds, tp=8, moe=True, ep=True)["shared_up_proj"] == (2 * 2048, 7168)  # whole under EP
    assert "mlp_up_proj" in gemm_ops(ds, tp=8, moe=False)  # the first 3 dense layers


def test_moe_layer_is_its_operators_summed() -> None:
    mx = get_model_spec("mixtral-8x7b")  # h 4096, 8 experts top-2 of 14336, 32 heads / 8 KV
    om = op_model_for(H100, 2)
    b = 32
    for ep, te, local in ((False, 2, 8), (True, 1, 4)):
        ops = layer_ops_general(om, mx, H100, b, tp=2, ep=ep, moe=True)
        assert ops["router"] == om.gemm_time("router", b, 8, 4096)
        assert ops["experts_up_proj"] == om.expert_gemm_time("e", b, 2 * 14336 / te, 4096, 8, 2, local)
        assert ops["experts_down_proj"] == om.expert_gemm_time("e", b, 4096, 14336 / te, 8, 2, local)
        assert ops["attn_pre_proj"] == om.gemm_time("attn_pre_proj", b, (32 + 16) * 128 / 2, 4096)
        assert "mlp_up_proj" not in ops and "shared_up_proj" not in ops
        assert layer_nonattn_general(om, mx, H100, b, 2, ep) == pytest.approx(sum(ops.values()), rel=1e-12)
    # DeepSeek-V3: 3 dense + 58 MoE layers, the mean over layer kinds
    ds = get_model_spec("deepseek-v3")
    dense = sum(layer_ops_general(om, ds, H100, b, 8, False, False).values())
    moe = sum(layer_ops_general(om, ds, H100, b, 8, False, True).values())
    want = (3 * dense + 58 * moe) / 61
    assert layer_nonattn_general(om, ds, H100, b, 8) == pytest.approx(want, rel=1e-12)


def test_the_general_path_is_the_measured_path_on_a_dense_bf16_model() -> None:
    """No second model: a dense 16-bit layer priced through the MoE/MLA/quantised code equals the
    measured-grounded one, so bf16 vs fp8 compares two precisions, not two models."""
    sp = get_model_spec("llama-2-7b")
    om = op_model_for(H100, 2)
    from llmplan.opcost.profiles import ModelDims

    for m, tp in ((1, 1), (128, 2), (2048, 4)):
        assert layer_nonattn_general(om, sp, H100, m, tp) == pytest.approx(
            om.layer_nonattn_time(ModelDims.from_spec(sp), m, tp), rel=1e-12
        )
        assert attention_general(om, sp, tp, 0, 0, m, m * 1024) == pytest.approx(
            om.attention_time(ModelDims.from_spec(sp), tp, 0, 0, m, m * 1024), rel=1e-12
        )


def test_fp8_kv_halves_the_decode_attention_reads() -> None:
    sp = get_model_spec("llama-3.1-8b")
    om = op_model_for(H100, 2)
    full = attention_general(om, sp, 1, 0, 0, 64, 64 * 8192)
    half = attention_general(om, sp.with_precision(None, "fp8"), 1, 0, 0, 64, 64 * 8192)
    g = om.params.gemm
    assert half - g.launch_s == pytest.approx((full - g.launch_s) / 2, rel=1e-9)


def test_instances_of_every_kind_are_priced_by_the_operator_model() -> None:
    ops, roof = CostParams(cost_model="ops"), CostParams(cost_model="roofline")
    for name, w in (("mixtral-8x7b", None), ("deepseek-v2-lite", None), ("llama-3.1-8b", "fp8")):
        sp = get_model_spec(name).with_precision(w, None)
        c = InstanceCost.single(sp, H100, tp=2, params=ops)
        assert c._ops, name  # the operator model, not the roofline
        # one decode step: layers x (operators + attention) + head + all-reduces + overhead
        n = sp.num_hidden_layers
        per_layer = layer_time_ops(sp, H100, 8, 8 * 1024, 8 * 1024, 2)
        assert per_layer == pytest.approx(
            layer_nonattn_general(op_model_for(H100, 2), sp, H100, 8, 2)
            + attention_general(op_model_for(H100, 2), sp, 2, 0, 0, 8, 8 * 1024),
            rel=1e-12,
        )
        stages = c._ops[0]
        assert stages.nonattn(8) == pytest.approx(n * layer_nonattn_general(stages.om, sp, H100, 8, 2))
        assert c.decode_time(8, 1024) != InstanceCost.single(sp, H100, tp=2, params=roof).decode_time(8, 1024)
    # fp8 W8A8 on H100 is faster than bf16 at both ends, through one model
    b16 = InstanceCost.single(get_model_spec("llama-3.1-8b"), H100, params=ops)
    f8 = InstanceCost.single(get_model_spec("llama-3.1-8b").with_precision("fp8", None), H100, params=ops)
    assert f8.decode_time(1, 1024) < b16.decode_time(1, 1024)
    assert f8.prefill_time(4096) < b16.prefill_time(4096)
    assert math.isfinite(f8.decode_time(256, 4096))
