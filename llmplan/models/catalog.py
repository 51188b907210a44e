"""Built-in model specs, numbers copied from each model's Hugging Face ``config.json``.

The older dense entries are written out below; the newer architectures (MoE, MLA, sliding
window) are the committed ``configs/<name>.json`` files, read through the same
:func:`~llmplan.models.spec.spec_from_hf_config` path a user's config.json takes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from llmplan.models.spec import ModelSpec, spec_from_hf_config

CONFIG_DIR = Path(__file__).with_name("configs")


def _from_config(path: Path) -> ModelSpec:
    cfg = json.loads(path.read_text())
    spec = spec_from_hf_config(cfg, name=path.stem)
    return dataclasses.replace(spec, hf_name=str(cfg.get("_name_or_path", "")))


def _llama(
    name: str,
    hf: str,
    h: int,
    i: int,
    n: int,
    heads: int,
    kv: int,
    vocab: int,
    pos: int,
    theta: float = 10000.0,
    eps: float = 1e-5,
    family: str = "llama",
    arch: str = "LlamaForCausalLM",
    tie: bool = False,
    dtype: str = "bfloat16",
) -> ModelSpec:
    return ModelSpec(
        name=name,
        family=family,
        hidden_size=h,
        intermediate_size=i,
        num_hidden_layers=n,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        max_position_embeddings=pos,
        rope_theta=theta,
        rms_norm_eps=eps,
        tie_word_embeddings=tie,
        dtype=dtype,
        attention_bias=family == "qwen2",
        architecture=arch,
        hf_name=hf,
    )


CATALOG: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        # Test-sized Llamas for the engine (random weights): fast unit tests and engine benchmarks.
        _llama("llama-tiny", "", 256, 688, 4, 4, 2, 32000, 2048),
        _llama("llama-120m", "", 768, 2048, 12, 12, 12, 32000, 2048),
        _llama(
            "llama-2-7b", "meta-llama/Llama-2-7b-hf", 4096, 11008, 32, 32, 32, 32000, 4096, dtype="float16"
        ),
        _llama(
            "llama-2-13b", "meta-llama/Llama-2-13b-hf", 5120, 13824, 40, 40, 40, 32000, 4096, dtype="float16"
        ),
        _llama(
            "llama-2-70b", "meta-llama/Llama-2-70b-hf", 8192, 28672, 80, 64, 8, 32000, 4096, dtype="float16"
        ),
        _llama(
            "llama-3.1-8b", "meta-llama/Llama-3.1-8B", 4096, 14336, 32, 32, 8, 128256, 131072, theta=500000.0
        ),
        _llama(
            "llama-3.1-70b",
            "meta-llama/Llama-3.1-70B",
            8192,
            28672,
            80,
            64,
            8,
            128256,
            131072,
            theta=500000.0,
        ),
        _llama(
            "mistral-7b",
            "mistralai/Mistral-7B-v0.1",
            4096,
            14336,
            32,
            32,
            8,
            32000,
            32768,
            family="mistral",
            arch="MistralForCausalLM",
        ),
        _llama(
            "qwen2.5-7b",
            "Qwen/Qwen2.5-7B",
            3584,
            18944,
            28,
            28,
            4,
            152064,
            131072,
            theta=1000000.0,
            eps=1e-6,
            family="qwen2",
            arch="Qwen2ForCausalLM",
        ),
        _llama(
            "qwen2.5-14b",
            "Qwen/Qwen2.5-14B",
            5120,
            13824,
            48,
            40,
            8,
            152064,
            131072,
            theta=1000000.0,
            eps=1e-5,
            family="qwen2",
            arch="Qwen2ForCausalLM",
        ),
        _llama(
            "qwen2.5-72b",
            "Qwen/Qwen2.5-72B",
            8192,
            29568,
            80,
            64,
            8,
            152064,
            131072,
            theta=1000000.0,
            eps=1e-5,
            family="qwen2",
            arch="Qwen2ForCausalLM",
        ),
        ModelSpec(
            name="opt-13b",
            family="opt",
            hidden_size=5120,
            intermediate_size=20480,
            num_hidden_layers=40,
            num_attention_heads=40,
            num_key_value_heads=40,
            vocab_size=50272,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            dtype="float16",
            gated_mlp=False,
            architecture="OPTForCausalLM",
            hf_name="facebook/opt-13b",
        ),
        ModelSpec(
            name="chatglm2-6b",
            family="chatglm",
            hidden_size=4096,
            intermediate_size=13696,
            num_hidden_layers=28,
            num_attention_heads=32,
            num_key_value_heads=2,
            vocab_size=65024,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            dtype="float16",
            attention_bias=True,
            head_dim_override=128,
            architecture="ChatGLMModel",
            hf_name="THUDM/chatglm2-6b",
        ),
    )
}
CATALOG.update({p.stem: _from_config(p) for p in sorted(CONFIG_DIR.glob("*.json"))})
CATALOG["mistral-7b"] = dataclasses.replace(CATALOG["mistral-7b"], sliding_window=4096)  # v0.1 config
