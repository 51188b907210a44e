"""What the planner needs to know about a transformer: its HF config and derived sizes.

A :class:`ModelSpec` carries the HF-style fields (so the engine can build a
``transformers`` config from it with :meth:`ModelSpec.to_hf_config_dict`) and derives
the quantities the cost model prices:

* ``layer_weight_bytes``: one decoder layer's parameters (attention, MLP, norms, biases);
* ``embed_weight_bytes`` / ``head_weight_bytes``: input embeddings (+ learned positions
  for OPT) on the first stage, final norm + LM head on the last (zero extra head bytes
  when the head is tied to the embeddings);
* ``kv_bytes_per_token_layer``: K and V of one token in one layer;
* ``layer_linear_params``: parameters that take part in a matmul per token, so a token
  costs ``2 * layer_linear_params`` FLOPs per layer, plus ``4 * hidden`` FLOPs per
  query-key pair of attention (QK^T and PV).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8": 1, "int8": 1}

# Architecture families and their module naming (see llmplan.plan.outputs.device_map).
FAMILIES = ("llama", "opt", "chatglm", "qwen2", "mistral")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    family: str  # llama | opt | chatglm | qwen2 | mistral
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    dtype: str = "bfloat16"
    head_dim_override: int | None = None
    # Gated MLP (SwiGLU: gate, up, down) for Llama-likes; OPT has fc1/fc2 with biases.
    gated_mlp: bool = True
    attention_bias: bool = False  # Qwen2 has q/k/v biases
    architecture: str = ""  # HF `architectures[0]`, informative
    hf_name: str = ""  # hub id the numbers come from
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_attention_heads

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def layer_linear_params(self) -> int:
        h, kv, i = self.hidden_size, self.kv_dim, self.intermediate_size
        q_o = 2 * h * self.num_attention_heads * self.head_dim
        mlp = (3 if self.gated_mlp else 2) * h * i
        return q_o + 2 * h * kv + mlp

    @property
    def layer_params(self) -> int:
        h, kv, i = self.hidden_size, self.kv_dim, self.intermediate_size
        norms = 2 * h * (2 if self.family == "opt" else 1)  # LayerNorm has a bias
        bias = 0
        if self.family == "opt":  # q,k,v,o and fc1/fc2 biases
            bias = 4 * h + i + h
        elif self.attention_bias:
            bias = h + 2 * kv
        return self.layer_linear_params + norms + bias

    @property
    def layer_weight_bytes(self) -> int:
        return self.layer_params * self.dtype_bytes

    @property
    def embed_params(self) -> int:
        p = self.vocab_size * self.hidden_size
        if self.family == "opt":  # learned positions, offset 2
            p += (self.max_position_embeddings + 2) * self.hidden_size
        return p

    @property
    def head_params(self) -> int:
        norm = self.hidden_size * (2 if self.family == "opt" else 1)
        return norm + (0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size)

    @property
    def embed_weight_bytes(self) -> int:
        return self.embed_params * self.dtype_bytes

    @property
    def head_weight_bytes(self) -> int:
        return self.head_params * self.dtype_bytes

    @property
    def total_params(self) -> int:
        return self.embed_params + self.head_params + self.num_hidden_layers * self.layer_params

    @property
    def weight_bytes(self) -> int:
        return self.total_params * self.dtype_bytes

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return 2 * self.kv_dim * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_bytes_per_token_layer * self.num_hidden_layers

    def layer_flops(self, tokens: float, attn_pairs: float) -> float:
        """FLOPs of one layer for ``tokens`` new tokens touching ``attn_pairs`` query-key pairs."""
        return (
            2.0 * self.layer_linear_params * tokens
            + 4.0 * self.num_attention_heads * self.head_dim * attn_pairs
        )

    @property
    def head_flops_per_token(self) -> float:
        return 2.0 * self.vocab_size * self.hidden_size

    # ---- conversions ---------------------------------------------------------------------
    def to_hf_config_dict(self) -> dict[str, Any]:
        """A dict ``transformers`` accepts (``LlamaConfig(**d)``, ``OPTConfig(**d)``, ...)."""
        torch_dtype = self.dtype if self.dtype in ("float16", "bfloat16", "float32") else "bfloat16"
        if self.family == "opt":
            return {
                "model_type": "opt",
                "architectures": ["OPTForCausalLM"],
                "hidden_size": self.hidden_size,
                "ffn_dim": self.intermediate_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "vocab_size": self.vocab_size,
                "max_position_embeddings": self.max_position_embeddings,
                "word_embed_proj_dim": self.hidden_size,
                "do_layer_norm_before": True,
                "enable_bias": True,
                "tie_word_embeddings": self.tie_word_embeddings,
                "torch_dtype": torch_dtype,
            }
        if self.family == "chatglm":
            return {
                "model_type": "chatglm",
                "architectures": ["ChatGLMModel"],
                "hidden_size": self.hidden_size,
                "ffn_hidden_size": self.intermediate_size,
                "num_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "multi_query_attention": True,
                "multi_query_group_num": self.num_key_value_heads,
                "padded_vocab_size": self.vocab_size,
                "seq_length": self.max_position_embeddings,
                "layernorm_epsilon": self.rms_norm_eps,
                "kv_channels": self.head_dim,
                "add_qkv_bias": True,
                "torch_dtype": torch_dtype,
                "tie_word_embeddings": False,
            }
        model_type = {"qwen2": "qwen2", "mistral": "mistral"}.get(self.family, "llama")
        arch = {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}.get(
            self.family, "LlamaForCausalLM"
        )
        d: dict[str, Any] = {
            "model_type": model_type,
            "architectures": [arch],
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": torch_dtype,
        }
        if self.head_dim_override:
            d["head_dim"] = self.head_dim_override
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], name: str = "") -> ModelSpec:
        """Build from a HF ``config.json`` dict (Llama, Mistral, Qwen2, OPT, ChatGLM layouts)."""
        mt = str(cfg.get("model_type", "")).lower()
        archs = cfg.get("architectures") or [""]
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
        if dtype not in DTYPE_BYTES:
            dtype = "bfloat16"
        name = name or cfg.get("_name_or_path", "") or mt
        try:
            if mt == "opt":
                return cls(
                    name=name,
                    family="opt",
                    hidden_size=cfg["hidden_size"],
                    intermediate_size=cfg["ffn_dim"],
                    num_hidden_layers=cfg["num_hidden_layers"],
                    num_attention_heads=cfg["num_attention_heads"],
                    num_key_value_heads=cfg["num_attention_heads"],
                    vocab_size=cfg["vocab_size"],
                    max_position_embeddings=cfg.get("max_position_embeddings", 2048),
                    tie_word_embeddings=cfg.get("tie_word_embeddings", True),
                    dtype=dtype,
                    gated_mlp=False,
                    architecture=archs[0],
                    rms_norm_eps=1e-5,
                )
            if mt == "chatglm":
                heads = cfg["num_attention_heads"]
                return cls(
                    name=name,
                    family="chatglm",
                    hidden_size=cfg["hidden_size"],
                    intermediate_size=cfg["ffn_hidden_size"],
                    num_hidden_layers=cfg["num_layers"],
                    num_attention_heads=heads,
                    num_key_value_heads=cfg.get("multi_query_group_num", heads)
                    if cfg.get("multi_query_attention")
                    else heads,
                    vocab_size=cfg.get("padded_vocab_size", cfg.get("vocab_size")),
                    max_position_embeddings=cfg.get("seq_length", 2048),
                    rms_norm_eps=cfg.get("layernorm_epsilon", 1e-5),
                    tie_word_embeddings=False,
                    dtype=dtype,
                    attention_bias=bool(cfg.get("add_qkv_bias", True)),
                    head_dim_override=cfg.get("kv_channels"),
                    architecture=archs[0],
                )
            family = {"qwen2": "qwen2", "mistral": "mistral"}.get(mt, "llama")
            heads = cfg["num_attention_heads"]
            return cls(
                name=name,
                family=family,
                hidden_size=cfg["hidden_size"],
                intermediate_size=cfg["intermediate_size"],
                num_hidden_layers=cfg["num_hidden_layers"],
                num_attention_heads=heads,
                num_key_value_heads=cfg.get("num_key_value_heads") or heads,
                vocab_size=cfg["vocab_size"],
                max_position_embeddings=cfg.get("max_position_embeddings", 4096),
                rope_theta=float(cfg.get("rope_theta", 10000.0)),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                dtype=dtype,
                attention_bias=family == "qwen2",
                head_dim_override=cfg.get("head_dim"),
                architecture=archs[0],
            )
        except KeyError as exc:
            raise LlmplanError(
                f"config for {name!r} lacks field {exc.args[0]!r}; pass a complete HF config.json "
                f"(model_type {mt or '?'})"
            ) from None

    @classmethod
    def from_config_file(cls, path: str | Path) -> ModelSpec:
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        try:
            cfg = json.loads(p.read_text())
        except FileNotFoundError:
            raise LlmplanError(
                f"model config {str(p)!r} does not exist; pass a catalog name or a config.json path"
            ) from None
        except json.JSONDecodeError as exc:
            raise LlmplanError(
                f"model config {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        return cls.from_hf_config(cfg, name=p.parent.name if p.name == "config.json" else p.stem)
