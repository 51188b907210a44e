"""Model specs: catalog numbers against real transformers modules, config.json loading, errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig, Qwen2Config

from llmplan.errors import LlmplanError
from llmplan.models import CATALOG, get_model_spec
from llmplan.models.spec import ModelSpec


@pytest.mark.parametrize(
    "name,billions",
    [
        ("llama-2-7b", 6.738),
        ("llama-2-13b", 13.016),
        ("llama-2-70b", 68.977),
        ("llama-3.1-8b", 8.030),
        ("llama-3.1-70b", 70.554),
        ("mistral-7b", 7.242),
        ("qwen2.5-7b", 7.616),
        ("qwen2.5-14b", 14.770),
        ("qwen2.5-72b", 72.706),
        ("opt-13b", 12.853),
        ("chatglm2-6b", 6.244),
    ],
)
def test_catalog_parameter_counts_match_published_sizes(name: str, billions: float) -> None:
    assert get_model_spec(name).total_params / 1e9 == pytest.approx(billions, rel=2e-3)


def _meta_params(config) -> int:
    with torch.device("meta"):  # shapes only; no memory, ties preserved
        model = AutoModelForCausalLM.from_config(config)
    seen = set()
    total = 0
    for p in model.parameters():  # tied weights count once
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


@pytest.mark.parametrize("family", ["llama", "opt", "qwen2"])
def test_spec_sizes_equal_the_transformers_module(family: str) -> None:
    base = get_model_spec("llama-tiny")
    if family == "llama":
        spec = base
        cfg = LlamaConfig(**spec.to_hf_config_dict())
    elif family == "opt":
        spec = ModelSpec(
            name="opt-tiny",
            family="opt",
            hidden_size=128,
            intermediate_size=512,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=4,
            vocab_size=1000,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            gated_mlp=False,
        )
        cfg = OPTConfig(**spec.to_hf_config_dict())
    else:
        spec = ModelSpec(
            name="qwen-tiny",
            family="qwen2",
            hidden_size=128,
            intermediate_size=344,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=1000,
            attention_bias=True,
        )
        cfg = Qwen2Config(**spec.to_hf_config_dict())
    assert _meta_params(cfg) == spec.total_params


def test_llama_tiny_and_120m_are_what_the_engine_expects() -> None:
    tiny = get_model_spec("llama-tiny")
    assert (
        tiny.vocab_size,
        tiny.hidden_size,
        tiny.num_hidden_layers,
        tiny.num_attention_heads,
        tiny.num_key_value_heads,
        tiny.intermediate_size,
        tiny.max_position_embeddings,
    ) == (32000, 256, 4, 4, 2, 688, 2048)
    m = get_model_spec("llama-120m")
    assert 0.1e9 < m.total_params < 0.15e9
    cfg = LlamaConfig(**m.to_hf_config_dict())
    assert cfg.num_hidden_layers == 12 and cfg.torch_dtype in (torch.bfloat16, "bfloat16")


def test_kv_and_flops_derivations() -> None:
    s = get_model_spec("llama-2-70b")  # GQA: 8 KV heads of 128
    assert s.kv_bytes_per_token_layer == 2 * 8 * 128 * 2
    assert s.kv_bytes_per_token == 80 * 4096
    glm = get_model_spec("chatglm2-6b")  # multi-query groups = 2
    assert glm.kv_bytes_per_token_layer == 2 * 2 * 128 * 2
    assert s.layer_flops(1, 0) == 2 * s.layer_linear_params
    assert s.layer_flops(0, 10) == 4 * 8192 * 10


def test_load_from_local_config_json(tmp_path) -> None:
    spec = get_model_spec("qwen2.5-7b")
    d = spec.to_hf_config_dict()
    (tmp_path / "config.json").write_text(json.dumps(d))
    loaded = get_model_spec(str(tmp_path))
    assert loaded.family == "qwen2" and loaded.total_params == spec.total_params
    assert get_model_spec(str(tmp_path / "config.json")).kv_bytes_per_token == spec.kv_bytes_per_token
    glm = get_model_spec("chatglm2-6b")
    (tmp_path / "glm.json").write_text(json.dumps(glm.to_hf_config_dict()))
    assert get_model_spec(str(tmp_path / "glm.json")).total_params == glm.total_params


def test_bad_model_names_and_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(LlmplanError) as e:
        get_model_spec("llama-9000")
    assert "llama-2-7b" in str(e.value) and "\n" not in str(e.value)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(LlmplanError, match="not valid JSON"):
        get_model_spec(str(bad))
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(LlmplanError, match="lacks field"):
        get_model_spec(str(bad))
    assert set(CATALOG) >= {"llama-2-7b", "opt-13b", "chatglm2-6b", "qwen2.5-72b", "mistral-7b"}
