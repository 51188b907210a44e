"""Plan outputs: device_map against real transformers modules, vLLM command, JSON/YAML round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from plan_helpers import make_graph
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

from llmplan.errors import LlmplanError
from llmplan.models import get_model_spec
from llmplan.models.spec import ModelSpec
from llmplan.plan.outputs import device_map, vllm_command, vllm_default_partition
from llmplan.plan.planner import make_plan
from llmplan.plan.types import Plan, PlanWorkload


def _bed(n: int, tflops=(71.0, 71.0, 71.0, 71.0), mem: float = 24.0):
    gpus = [{"memory_gib": mem, "bf16_tflops": tflops[i], "hbm_gbps": 936.0, "name": "RTX"} for i in range(n)]
    return make_graph(gpus, {(i, j): "PIX" for i in range(n) for j in range(i + 1, n)})


def _covers_exactly_once(model: torch.nn.Module, dm: dict[str, int]) -> None:
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    for name in names:
        owners = [k for k in dm if name == k or name.startswith(k + ".")]
        assert len(owners) == 1, (name, owners)
    module_names = {n for n, _ in model.named_modules()}
    assert set(dm) <= module_names, set(dm) - module_names


@pytest.mark.parametrize("family", ["llama", "opt"])
def test_device_map_covers_every_module_exactly_once(family: str) -> None:
    if family == "llama":
        spec = get_model_spec("llama-tiny")
        cfg = LlamaConfig(**spec.to_hf_config_dict())
    else:
        spec = ModelSpec(
            name="opt-tiny",
            family="opt",
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=500,
            max_position_embeddings=128,
            tie_word_embeddings=True,
            gated_mlp=False,
        )
        cfg = OPTConfig(**spec.to_hf_config_dict())
    # a long KV reserve (2112 tokens per request) within the models' context limits
    wl = PlanWorkload(max_batch=512, input_len=64, output_len=32, kv_tokens_per_request=2112)
    plan = make_plan(spec, _bed(3), "LR", workload=wl)
    dm = device_map(plan)
    assert len({v for k, v in dm.items() if ".layers." in k}) == len(plan.stages)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    _covers_exactly_once(model, dm)
    if family == "opt":  # tied head stays with the embeddings
        assert dm["lm_head"] == dm["model.decoder.embed_tokens"]


def test_chatglm_device_map_uses_its_module_names() -> None:
    spec = dataclasses.replace(get_model_spec("chatglm2-6b"), num_hidden_layers=6)
    plan = make_plan(
        spec, _bed(2, mem=6.0), "HE", workload=PlanWorkload(max_batch=4, input_len=256, output_len=64)
    )
    dm = device_map(plan)
    layer_keys = sorted(int(k.rsplit(".", 1)[1]) for k in dm if k.startswith("transformer.encoder.layers."))
    assert layer_keys == list(range(6))
    assert {
        "transformer.embedding",
        "transformer.output_layer",
        "transformer.encoder.final_layernorm",
    } <= set(dm)
    assert dm["transformer.output_layer"] == plan.stages[-1].gpu_indices[0]


def test_vllm_command_for_uniform_pp_and_none_for_mixed_gpus() -> None:
    spec = dataclasses.replace(get_model_spec("llama-2-7b"), num_hidden_layers=8)
    plan = make_plan(spec, _bed(4), "LR", workload=PlanWorkload(max_batch=64, input_len=2048, output_len=16))
    cmd, note = vllm_command(plan)
    assert cmd is not None
    order = ",".join(str(st.gpu_indices[0]) for st in plan.stages)
    assert f"CUDA_VISIBLE_DEVICES={order} " in cmd
    assert f"--pipeline-parallel-size {len(plan.stages)}" in cmd and "--tensor-parallel-size 1" in cmd
    counts = [st.layers for st in plan.stages]
    assert (f"VLLM_PP_LAYER_PARTITION={','.join(map(str, counts))}" in cmd) == (
        counts != vllm_default_partition(8, len(counts))
    )
    mixed = _bed(2)
    mixed.nodes["GPU1"]["name"] = "Other GPU"
    mixed.nodes["GPU1"]["bf16_tflops"] = 30.0
    plan2 = make_plan(spec, mixed, "LR", workload=PlanWorkload(max_batch=64, input_len=2048, output_len=16))
    if len(plan2.stages) > 1:
        assert vllm_command(plan2)[0] is None
    assert vllm_default_partition(28, 3) == [9, 10, 9]  # vLLM gives the remainder to middle stages


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_plan_round_trips_through_files(tmp_path, suffix: str) -> None:
    spec = dataclasses.replace(get_model_spec("llama-2-7b"), num_hidden_layers=6)
    plan = make_plan(spec, _bed(3, tflops=(71, 60, 50, 40)), "HELR", a1=0.7, a2=0.3)
    path = plan.save(tmp_path / f"plan{suffix}")
    back = Plan.load(path)
    assert back == plan
    assert back.to_dict() == json.loads(plan.to_json())


def test_bad_plan_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(LlmplanError, match="does not exist"):
        Plan.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(LlmplanError, match="cannot be parsed"):
        Plan.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(LlmplanError, match="not a llmplan plan"):
        Plan.load(tmp_path / "other.json")


def test_multi_node_plans_use_per_host_ordinals() -> None:
    from llmplan.plan.outputs import hosts
    from llmplan.topology import load_topology

    G = load_topology("preset:dgx-h100-x8")
    spec = get_model_spec("qwen2.5-72b")
    # one host, but the second one: CUDA ordinals restart at 0 there
    one = make_plan(spec, G, "HE", gpus=[f"GPU{i}" for i in range(8, 16)])
    assert hosts(one) == [one.stages[0].host] and all(st.device == st.gpu_indices[0] - 8 for st in one.stages)
    cmd, _ = vllm_command(one)
    assert cmd is not None and "CUDA_VISIBLE_DEVICES=" + ",".join(str(st.device) for st in one.stages) in cmd
    assert set(device_map(one).values()) == {st.device for st in one.stages}
    # across hosts: no single-process device_map, per-host device lists in the vLLM note
    wide = make_plan(spec, G, "LR")
    assert len(hosts(wide)) > 1
    with pytest.raises(LlmplanError, match="spans hosts"):
        device_map(wide)
    cmd, note = vllm_command(wide)
    assert cmd is not None and "CUDA_VISIBLE_DEVICES" not in cmd and "Ray" in note
    assert f"{hosts(wide)[1]}: CUDA_VISIBLE_DEVICES=0" in note
