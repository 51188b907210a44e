"""Model hyper-parameters for the built-in engine, read from an HF ``config.json`` dict.

One dataclass covers the Llama family the engine runs: Llama 2/3 (optionally llama3 or
linear RoPE scaling), Mistral (sliding window caps the context) and Qwen2 (q/k/v bias).
Both the old (``rope_theta`` + ``rope_scaling``) and the transformers-5 spelling
(``rope_parameters``) of the RoPE settings are understood.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # Qwen2: bias on q/k/v (never on o)
    o_bias: bool = False  # Llama's attention_bias=True puts a bias on o_proj too
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_ids: tuple[int, ...] = (2,)
    model_type: str = "llama"
    name: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def max_model_len(self) -> int:
        window = self.extra.get("sliding_window")
        # Attention over the full context equals sliding-window attention only up to the window.
        if isinstance(window, int) and window > 0:
            return min(self.max_position_embeddings, window)
        return self.max_position_embeddings

    def num_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        per_layer = h * (self.q_size + 2 * self.kv_size) + self.q_size * h + 3 * h * i + 2 * h
        head = 0 if self.tie_word_embeddings else self.vocab_size * h
        return self.vocab_size * h + self.num_layers * per_layer + h + head

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], name: str | None = None) -> ModelConfig:
        model_type = str(d.get("model_type", "llama"))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise LlmplanError(
                f"model_type {model_type!r} is not supported by the built-in engine; "
                f"use one of {', '.join(SUPPORTED_MODEL_TYPES)} (or serve it with the vLLM backend)"
            )
        act = d.get("hidden_act", "silu")
        if act != "silu":
            raise LlmplanError(f"hidden_act {act!r} is not supported; the engine implements SwiGLU (silu)")
        rope = dict(d.get("rope_parameters") or {})
        scaling = d.get("rope_scaling") or None
        if scaling:
            rope.update(scaling)
        theta = float(rope.pop("rope_theta", d.get("rope_theta", 10000.0)))
        rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise LlmplanError(
                f"rope_type {rope_type!r} is not supported; the engine implements "
                f"{', '.join(SUPPORTED_ROPE_TYPES)}"
            )
        rope_scaling = None if rope_type == "default" else {**rope, "rope_type": rope_type}
        heads = int(d["num_attention_heads"])
        hidden = int(d["hidden_size"])
        eos = d.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
        qkv_bias = model_type == "qwen2" or bool(d.get("attention_bias", False))
        extra = {}
        if d.get("use_sliding_window", model_type == "mistral") and d.get("sliding_window"):
            extra["sliding_window"] = int(d["sliding_window"])
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(d["intermediate_size"]),
            num_layers=int(d["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(d.get("num_key_value_heads") or heads),
            head_dim=int(d.get("head_dim") or hidden // heads),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=qkv_bias,
            o_bias=model_type != "qwen2" and bool(d.get("attention_bias", False)),
            mlp_bias=bool(d.get("mlp_bias", False)),
            bos_token_id=d.get("bos_token_id"),
            eos_token_ids=eos_ids,
            model_type=model_type,
            name=name or str(d.get("_name_or_path") or model_type),
            extra=extra,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """An HF ``config.json`` dict (used to build the reference model in tests)."""
        rope: dict[str, Any] = {"rope_theta": self.rope_theta, "rope_type": "default"}
        if self.rope_scaling:
            rope.update(self.rope_scaling)
        return {
            "architectures": ["Qwen2ForCausalLM" if self.model_type == "qwen2" else "LlamaForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": rope,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_ids)
            if len(self.eos_token_ids) != 1
            else self.eos_token_ids[0],
        }


# Used only until ``llmplan.models.get_model_spec`` (the planner's catalog) is importable;
# the numbers are the catalog's for these two names.
_FALLBACK_CATALOG: dict[str, dict[str, Any]] = {
    "llama-tiny": {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
    "llama-120m": {
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_key_value_heads": 12,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    },
}


def catalog_config(name: str) -> ModelConfig:
    """The config of a catalog model, for ``--dummy-weights NAME``."""
    try:
        from llmplan.models import get_model_spec  # type: ignore[attr-defined]
    except ImportError:
        get_model_spec = None
    if get_model_spec is not None:
        try:
            spec = get_model_spec(name)
        except (KeyError, LlmplanError):
            spec = None
        if spec is not None:
            return ModelConfig.from_hf_dict(spec.to_hf_config_dict(), name=name)
    if name in _FALLBACK_CATALOG:
        return ModelConfig.from_hf_dict(_FALLBACK_CATALOG[name], name=name)
    raise LlmplanError(
        f"unknown model {name!r} for --dummy-weights; use a catalog name such as "
        f"{', '.join(sorted(_FALLBACK_CATALOG))} (see `llmplan plan --list-models`)"
    )


def load_hf_config(model_dir: str | Path) -> ModelConfig:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise LlmplanError(f"{path} not found; --model must be a local HF model directory with config.json")
    from llmplan.validate import read_text

    fix = "re-download the model's config.json"
    try:
        d = json.loads(read_text(path, "model config", fix))
    except json.JSONDecodeError as e:
        raise LlmplanError(f"{path} is not valid JSON ({e}); {fix}") from e
    if not isinstance(d, dict):
        raise LlmplanError(f"{path} is not a JSON object; {fix}")
    try:
        return ModelConfig.from_hf_dict(d, name=Path(model_dir).name)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
        raise LlmplanError(f"{path} is not a usable model config ({type(e).__name__}: {e}); {fix}") from None
