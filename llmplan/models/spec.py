"""What the planner needs to know about a transformer: its HF config and derived sizes.

A :class:`ModelSpec` carries the HF-style fields (so the engine can build a
``transformers`` config from it with :meth:`ModelSpec.to_hf_config_dict`) and derives
the quantities the cost model prices. Layers come in kinds: dense or MoE (routed experts,
shared experts, a router; DeepSeek's first ``first_k_dense`` layers are dense), and full or
sliding-window attention (Gemma 2/3 interleave them, Mistral-v0.1 and Phi-3 slide every
layer); attention is multi-head/GQA or DeepSeek's MLA (a low-rank latent KV).

Per-layer-kind counts (exact, tested against ``transformers`` modules and published totals):

* ``attn_linear_params`` / ``attn_other_params``: q/k/v/o (or MLA's q_a/q_b/kv_a/kv_b/o)
  matmul weights, and biases / q-k norms / MLA's latent norms;
* ``dense_mlp_params``, ``expert_params`` (one routed expert), ``shared_expert_params``,
  ``router_params``;
* ``dense_layer_params`` / ``moe_layer_params`` and ``total_params`` (embeddings, final norm,
  LM head unless tied).

What the cost model reads, for layers it treats as identical (the planner's contiguity
argument): ``layer_weight_bytes`` is the *largest* layer kind's bytes (memory caps stay safe;
on DeepSeek the first stage is over-reserved by ``first_k_dense`` x (MoE - dense) layer
bytes), ``layer_linear_params`` the *mean* active matmul parameters per token over all layers
(so summed stage times equal the whole model's), ``kv_bytes_per_token_layer`` one full-attention
layer's K and V (or MLA latent) per token, and :meth:`kv_bytes_per_seq_layer` the mean per-layer
KV of one sequence with sliding-window layers capped at the window.

Precision: ``weight_dtype`` (bf16 | fp16 | fp8 | int8 | int4; "" = the checkpoint's ``dtype``)
prices the matmul weights of decoder layers (int4 = AWQ/GPTQ with an fp16 scale and a 4-bit
zero per group of 128; fp8 with one fp32 scale per 128x128 block); embeddings, the LM head,
norms, biases and routers stay in the activation dtype, as in vLLM. ``kv_dtype`` (auto | fp8)
prices the KV cache.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8": 1, "int8": 1}

# Weight precisions `llmplan plan --weight-dtype` accepts: bytes per matmul weight, scales included.
WEIGHT_DTYPES: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0 + 4.0 / (128 * 128),
    "int8": 1.0 + 2.0 / 128,  # per-group fp16 scale (W8A8 checkpoints use per-channel: less)
    "int4": 0.5 + (2.0 + 0.5) / 128,  # AWQ/GPTQ: fp16 scale + int4 zero per group of 128
}
KV_DTYPES = ("auto", "fp8")
_ACT_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}

# Architecture families and their module naming (see llmplan.plan.outputs.device_map).
FAMILIES = (
    "llama",
    "opt",
    "chatglm",
    "qwen2",
    "mistral",
    "qwen3",
    "gemma2",
    "gemma3",
    "phi3",
    "mixtral",
    "qwen2_moe",
    "qwen3_moe",
    "deepseek_v2",
    "deepseek_v3",
)

# config.json ``model_type`` -> family (what from_hf_config reads).
SUPPORTED_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "mistral",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
    "mixtral": "mixtral",
    "qwen2_moe": "qwen2_moe",
    "qwen3_moe": "qwen3_moe",
    "deepseek_v2": "deepseek_v2",
    "deepseek_v3": "deepseek_v3",
    "opt": "opt",
    "chatglm": "chatglm",
}
HOW_TO_ADD = (
    "to add one, map its config fields in spec_from_hf_config (llmplan/models/spec.py) "
    "and test its parameter count against the published total"
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    family: str  # see FAMILIES
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
    # ---- attention variants ----
    qk_norm: bool = False  # Qwen3 / Gemma3: RMSNorm over q and k heads (head_dim weights each)
    norms_per_layer: int = 2  # Gemma 2/3: 4 (pre/post attention and feed-forward)
    sliding_window: int = 0  # 0: no sliding-window layers
    sliding_window_pattern: int = 0  # 0: every layer slides; p: layer i is global iff (i+1) % p == 0
    # MLA (DeepSeek-V2/V3): kv_lora_rank > 0
    q_lora_rank: int = 0  # 0: plain q_proj
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    # ---- MoE (num_experts > 0) ----
    num_experts: int = 0  # routed experts per MoE layer
    num_experts_per_tok: int = 0
    moe_intermediate_size: int = 0
    num_shared_experts: int = 0  # DeepSeek: shared experts of moe_intermediate_size
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE: one shared expert of this size + sigmoid gate
    first_k_dense: int = 0  # DeepSeek first_k_dense_replace
    router_bias: bool = False  # DeepSeek-V3 e_score_correction_bias
    # ---- precision ("" = the checkpoint's dtype / auto) ----
    weight_dtype: str = ""
    kv_dtype: str = ""
    checkpoint_quant: str = (
        ""  # the precision the checkpoint itself is quantized to (its quantization_config)
    )
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---- kinds ---------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        return max(0, self.num_hidden_layers - self.first_k_dense) if self.is_moe else 0

    @property
    def dense_layers(self) -> int:
        return self.num_hidden_layers - self.moe_layers

    def is_sliding_layer(self, i: int) -> bool:
        if not self.sliding_window:
            return False
        if self.sliding_window_pattern <= 1:
            return True
        return (i + 1) % self.sliding_window_pattern != 0

    @property
    def sliding_layers(self) -> int:
        return sum(self.is_sliding_layer(i) for i in range(self.num_hidden_layers))

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.hidden_size // self.num_attention_heads

    @property
    def dtype_bytes(self) -> int:
        """Bytes of one activation (and of unquantized weights: embeddings, norms, head)."""
        return DTYPE_BYTES[self.dtype]

    @property
    def weight_precision(self) -> str:
        return self.weight_dtype or _ACT_SHORT.get(self.dtype, "bf16")

    @property
    def weight_param_bytes(self) -> float:
        """Bytes per decoder-layer matmul weight at ``weight_dtype`` (scales included)."""
        if not self.weight_dtype:
            return float(self.dtype_bytes)
        return WEIGHT_DTYPES[self.weight_dtype]

    @property
    def kv_elem_bytes(self) -> int:
        return 1 if self.kv_dtype == "fp8" else self.dtype_bytes

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def kv_split_heads(self) -> int:
        """How many ways TP can divide the KV cache: KV heads (MLA's latent is one, replicated)."""
        return 1 if self.is_mla else self.num_key_value_heads

    # attention
    @property
    def attn_linear_params(self) -> int:
        h, heads = self.hidden_size, self.num_attention_heads
        if self.is_mla:
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            q = (h * self.q_lora_rank + self.q_lora_rank * heads * qk) if self.q_lora_rank else h * heads * qk
            kv = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank * heads * (
                self.qk_nope_head_dim + self.v_head_dim
            )
            return q + kv + heads * self.v_head_dim * h
        return 2 * h * heads * self.head_dim + 2 * h * self.kv_dim

    @property
    def attn_other_params(self) -> int:
        """Biases, q/k norms, MLA latent norms (not matmul weights)."""
        h = self.hidden_size
        if self.family == "opt":  # q, k, v, o biases
            return 4 * h
        p = 0
        if self.attention_bias:
            p += self.num_attention_heads * self.head_dim + 2 * self.kv_dim
        if self.qk_norm:
            p += 2 * self.head_dim
        if self.is_mla:
            p += self.q_lora_rank + self.kv_lora_rank
        return p

    @property
    def norm_params(self) -> int:
        h = self.hidden_size
        return 2 * 2 * h if self.family == "opt" else self.norms_per_layer * h

    # feed-forward
    @property
    def dense_mlp_params(self) -> int:
        return (3 if self.gated_mlp else 2) * self.hidden_size * self.intermediate_size

    @property
    def dense_mlp_other_params(self) -> int:
        return self.intermediate_size + self.hidden_size if self.family == "opt" else 0  # fc1/fc2 biases

    @property
    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def shared_expert_params(self) -> int:
        return self.num_shared_experts * self.expert_params + 3 * self.hidden_size * (
            self.shared_expert_intermediate_size
        )

    @property
    def router_params(self) -> int:
        if not self.is_moe:
            return 0
        p = self.hidden_size * self.num_experts
        if self.router_bias:
            p += self.num_experts
        if self.shared_expert_intermediate_size:  # Qwen2-MoE shared_expert_gate
            p += self.hidden_size
        return p

    # per layer kind
    @property
    def dense_layer_params(self) -> int:
        return (
            self.attn_linear_params
            + self.attn_other_params
            + self.norm_params
            + self.dense_mlp_params
            + self.dense_mlp_other_params
        )

    @property
    def moe_layer_params(self) -> int:
        return (
            self.attn_linear_params
            + self.attn_other_params
            + self.norm_params
            + self.num_experts * self.expert_params
            + self.shared_expert_params
            + self.router_params
        )

    def _layer_bytes(self, linear: int, other: int) -> float:
        return linear * self.weight_param_bytes + other * self.dtype_bytes

    @property
    def dense_layer_weight_bytes(self) -> float:
        return self._layer_bytes(
            self.attn_linear_params + self.dense_mlp_params,
            self.attn_other_params + self.norm_params + self.dense_mlp_other_params,
        )

    @property
    def moe_layer_weight_bytes(self) -> float:
        return self._layer_bytes(
            self.attn_linear_params + self.num_experts * self.expert_params + self.shared_expert_params,
            self.attn_other_params + self.norm_params + self.router_params,
        )

    @property
    def layer_params(self) -> int:
        """Parameters of the largest layer kind (all layers for dense models)."""
        return self.moe_layer_params if self.moe_layers else self.dense_layer_params

    @property
    def layer_weight_bytes(self) -> float:
        """Bytes of the largest layer kind: what a memory cap must assume for any layer."""
        return self.moe_layer_weight_bytes if self.moe_layers else self.dense_layer_weight_bytes

    @property
    def layers_weight_bytes(self) -> float:
        """All decoder layers, exactly."""
        return (
            self.dense_layers * self.dense_layer_weight_bytes + self.moe_layers * self.moe_layer_weight_bytes
        )

    def range_weight_bytes(self, start: int, end: int) -> float:
        """Layers ``[start, end)``, exactly (dense layers come first)."""
        dense = max(0, min(end, self.dense_layers) - start)
        return dense * self.dense_layer_weight_bytes + (end - start - dense) * self.layer_weight_bytes

    @property
    def layer_active_params(self) -> float:
        """Mean over layers of the matmul parameters one token passes through."""
        dense = self.attn_linear_params + self.dense_mlp_params
        moe = (
            self.attn_linear_params
            + self.num_experts_per_tok * self.expert_params
            + self.shared_expert_params
            + self.router_params
        )
        n = self.num_hidden_layers
        return (self.dense_layers * dense + self.moe_layers * moe) / n

    @property
    def layer_linear_params(self) -> float:
        """Matmul parameters per token per layer (mean over layers; active experts only)."""
        if not self.is_moe and self.dense_layers == self.num_hidden_layers:
            return self.attn_linear_params + self.dense_mlp_params
        return self.layer_active_params

    @property
    def active_params(self) -> float:
        """Parameters one token uses (embedding row not counted as compute; LM head is)."""
        return self.layer_active_params * self.num_hidden_layers + self.embed_params + self.head_params

    def moe_expert_read_bytes(self, tokens: float) -> float:
        """Bytes of routed experts one MoE layer reads for ``tokens`` tokens: expected distinct
        experts touched, ``E * (1 - (1 - k/E)^tokens)`` (uniform routing), times one expert."""
        if not self.is_moe or tokens <= 0:
            return 0.0
        e, k = self.num_experts, self.num_experts_per_tok
        touched = e * (1.0 - (1.0 - k / e) ** tokens)
        return touched * self.expert_params * self.weight_param_bytes

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
        return (
            self.embed_params
            + self.head_params
            + self.dense_layers * self.dense_layer_params
            + self.moe_layers * self.moe_layer_params
        )

    @property
    def weight_bytes(self) -> float:
        return self.embed_weight_bytes + self.head_weight_bytes + self.layers_weight_bytes

    @property
    def kv_bytes_per_token_layer(self) -> int:
        """K and V (or MLA's latent + rope key) of one token in one full-attention layer."""
        if self.is_mla:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * self.kv_elem_bytes
        return 2 * self.kv_dim * self.kv_elem_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """All layers, uncapped (sliding layers counted in full: the conservative per-token figure)."""
        return self.kv_bytes_per_token_layer * self.num_hidden_layers

    def range_kv_bytes_per_seq(self, start: int, end: int, tokens: float) -> float:
        """KV bytes one sequence of ``tokens`` tokens holds in layers ``[start, end)``: full-attention
        layers every token, sliding-window layers at most the window. The one KV-size function the
        planner's reserve and the simulator's KV pool both price (:meth:`kv_bytes_per_seq_layer`)."""
        sl = sum(self.is_sliding_layer(i) for i in range(start, end)) if self.sliding_window else 0
        capped = min(tokens, self.sliding_window) if sl else 0.0
        return self.kv_bytes_per_token_layer * ((end - start - sl) * tokens + sl * capped)

    def kv_bytes_per_seq_layer(self, tokens: float) -> float:
        """Mean per-layer KV bytes of one sequence of ``tokens`` tokens (sliding layers capped)."""
        n = self.num_hidden_layers
        return self.range_kv_bytes_per_seq(0, n, tokens) / n

    def kv_bytes_per_seq(self, tokens: float) -> float:
        return self.kv_bytes_per_seq_layer(tokens) * self.num_hidden_layers

    @property
    def attn_flops_per_pair(self) -> float:
        """FLOPs per query-key pair of one layer (QK^T and PV)."""
        if self.is_mla:
            return (
                2.0
                * self.num_attention_heads
                * (self.qk_nope_head_dim + self.qk_rope_head_dim + self.v_head_dim)
            )
        return 4.0 * self.num_attention_heads * self.head_dim

    def layer_flops(self, tokens: float, attn_pairs: float) -> float:
        """FLOPs of one layer for ``tokens`` new tokens touching ``attn_pairs`` query-key pairs."""
        return 2.0 * self.layer_linear_params * tokens + self.attn_flops_per_pair * attn_pairs

    @property
    def head_flops_per_token(self) -> float:
        return 2.0 * self.vocab_size * self.hidden_size

    def with_precision(self, weight_dtype: str | None = None, kv_dtype: str | None = None) -> ModelSpec:
        """This model at another weight / KV precision (validated; "" or None keeps the current one)."""
        w = self.weight_dtype if weight_dtype is None else weight_dtype
        k = self.kv_dtype if kv_dtype is None else ("" if kv_dtype == "auto" else kv_dtype)
        if w and w not in WEIGHT_DTYPES:
            raise LlmplanError(f"--weight-dtype {w!r} is not one of {', '.join(WEIGHT_DTYPES)}")
        if k and k not in KV_DTYPES:
            raise LlmplanError(f"--kv-dtype {k!r} is not one of {', '.join(KV_DTYPES)}")
        if w in ("bf16", "fp16"):  # 16-bit weights: the activation dtype follows (vLLM --dtype)
            return replace(self, dtype="bfloat16" if w == "bf16" else "float16", weight_dtype="", kv_dtype=k)
        return replace(self, weight_dtype=w, kv_dtype=k)

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
        model_type = {"qwen2": "qwen2", "mistral": "mistral", "gemma3": "gemma3_text"}.get(
            self.family, self.family
        )
        arch = self.architecture or {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}.get(
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
        if self.family not in ("llama", "qwen2", "mistral"):
            d["attention_bias"] = self.attention_bias
        if self.sliding_window:
            d["sliding_window"] = self.sliding_window
            if self.family == "gemma3":
                d["sliding_window_pattern"] = self.sliding_window_pattern
        if self.family == "mixtral":
            d["num_local_experts"] = self.num_experts
        elif self.family in ("qwen2_moe", "qwen3_moe"):
            d["num_experts"] = self.num_experts
            d["moe_intermediate_size"] = self.moe_intermediate_size
            if self.shared_expert_intermediate_size:
                d["shared_expert_intermediate_size"] = self.shared_expert_intermediate_size
        elif self.family.startswith("deepseek"):
            d.update(
                n_routed_experts=self.num_experts,
                moe_intermediate_size=self.moe_intermediate_size,
                n_shared_experts=self.num_shared_experts,
                first_k_dense_replace=self.first_k_dense,
                moe_layer_freq=1,
                topk_method="noaux_tc" if self.router_bias else "greedy",
                q_lora_rank=self.q_lora_rank or None,
                kv_lora_rank=self.kv_lora_rank,
                qk_nope_head_dim=self.qk_nope_head_dim,
                qk_rope_head_dim=self.qk_rope_head_dim,
                v_head_dim=self.v_head_dim,
            )
        if self.is_moe:
            d["num_experts_per_tok"] = self.num_experts_per_tok
        if self.weight_dtype in ("fp8", "int4", "int8"):
            d["quantization_config"] = (
                {"quant_method": "fp8", "weight_block_size": [128, 128]}
                if self.weight_dtype == "fp8"
                else {
                    "quant_method": "gptq",
                    "bits": 4 if self.weight_dtype == "int4" else 8,
                    "group_size": 128,
                }
            )
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], name: str = "") -> ModelSpec:
        return spec_from_hf_config(cfg, name)

    @classmethod
    def from_config_file(cls, path: str | Path) -> ModelSpec:
        p = Path(path)
        if p.is_dir():
            p = p / "config.json"
        try:
            from llmplan.validate import read_text

            cfg = json.loads(read_text(p, "model config", "pass a catalog name or a config.json path"))
        except FileNotFoundError:
            raise LlmplanError(
                f"model config {str(p)!r} does not exist; pass a catalog name or a config.json path"
            ) from None
        except json.JSONDecodeError as exc:
            raise LlmplanError(
                f"model config {str(p)!r} is not valid JSON ({exc.msg} at line {exc.lineno})"
            ) from None
        if not isinstance(cfg, dict):
            raise LlmplanError(
                f"model config {str(p)!r} is not a JSON object (a Hugging Face config.json is one)"
            )
        return cls.from_hf_config(cfg, name=p.parent.name if p.name == "config.json" else p.stem)


# ---- config.json -> ModelSpec ---------------------------------------------------------------

# transformers' own defaults for fields Gemma 3's text_config leaves out (Gemma3TextConfig).
_GEMMA3_TEXT_DEFAULTS = {
    "vocab_size": 262208,
    "max_position_embeddings": 131072,
    "sliding_window": 4096,
    "sliding_window_pattern": 6,
    "head_dim": 256,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
}


def _weight_dtype_of(cfg: dict[str, Any], name: str) -> str:
    """The weight precision a checkpoint's ``quantization_config`` declares ("" = unquantized)."""
    q = cfg.get("quantization_config")
    if not q:
        return ""
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        return "fp8"
    if method in ("awq", "gptq"):
        bits = int(q.get("bits", 4))
        if bits in (4, 8):
            return "int4" if bits == 4 else "int8"
    if method == "compressed-tensors":
        for group in (q.get("config_groups") or {}).values():
            w = group.get("weights") or {}
            bits, kind = w.get("num_bits"), w.get("type")
            if bits == 8 and kind == "float":
                return "fp8"
            if bits in (4, 8) and kind == "int":
                return "int4" if bits == 4 else "int8"
    raise LlmplanError(
        f"config for {name!r} declares quantization {method or '?'} "
        f"({', '.join(f'{k}={v}' for k, v in q.items() if k in ('bits', 'quant_method'))}), which llmplan "
        f"cannot price; pass the unquantized config and --weight-dtype {'|'.join(WEIGHT_DTYPES)}"
    )


def _sliding_pattern(layer_types: list[str], name: str) -> int:
    """``layer_types`` ("sliding_attention" / "full_attention" per layer) as a period p (0 = all slide)."""
    n = len(layer_types)
    full = [i for i, t in enumerate(layer_types) if t == "full_attention"]
    if not full:
        return 0
    p = full[0] + 1
    if all((t == "full_attention") == ((i + 1) % p == 0) for i, t in enumerate(layer_types)):
        return p
    raise LlmplanError(
        f"config for {name!r}: layer_types ({n} layers) is not a periodic sliding/full pattern, which "
        "llmplan cannot price; " + HOW_TO_ADD
    )


def spec_from_hf_config(cfg: dict[str, Any], name: str = "") -> ModelSpec:  # noqa: C901 - one branch per HF config convention (rope, MoE, MLA, windows); a table would hide which model needs which
    """A :class:`ModelSpec` from a HF ``config.json`` dict of a supported ``model_type``.

    Anything else is refused (one line: the type or field, the supported list, how to add one):
    a wrong spec plans a 47 B MoE onto one GPU without a warning.
    """
    mt = str(cfg.get("model_type", "")).lower()
    name = name or cfg.get("_name_or_path", "") or mt
    if mt not in SUPPORTED_MODEL_TYPES:
        raise LlmplanError(
            f"config for {name!r} has model_type {mt or '(none)'!r}, which llmplan does not model; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}; {HOW_TO_ADD}"
        )
    family = SUPPORTED_MODEL_TYPES[mt]
    archs = cfg.get("architectures") or [""]
    if family == "gemma3" and isinstance(cfg.get("text_config"), dict):
        # the multimodal wrapper: plan the language model (the vision tower is not counted)
        cfg = {**_GEMMA3_TEXT_DEFAULTS, **cfg["text_config"], "torch_dtype": cfg.get("torch_dtype")}
    elif family == "gemma3":
        cfg = {**_GEMMA3_TEXT_DEFAULTS, **cfg}
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
    if dtype not in ("float16", "bfloat16", "float32"):
        dtype = "bfloat16"

    def need(key: str) -> Any:
        v = cfg.get(key)
        if v is None:
            raise LlmplanError(
                f"config for {name!r} lacks field {key!r} (model_type {mt}), which its spec needs; "
                "pass the model's complete config.json"
            )
        return v

    def refuse(what: str) -> LlmplanError:
        return LlmplanError(
            f"config for {name!r} (model_type {mt}) uses {what}, which llmplan cannot price; {HOW_TO_ADD}"
        )

    weight_dtype = _weight_dtype_of(cfg, name)
    if family == "opt":
        return ModelSpec(
            name=name,
            family="opt",
            hidden_size=need("hidden_size"),
            intermediate_size=need("ffn_dim"),
            num_hidden_layers=need("num_hidden_layers"),
            num_attention_heads=need("num_attention_heads"),
            num_key_value_heads=need("num_attention_heads"),
            vocab_size=need("vocab_size"),
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
            dtype=dtype,
            gated_mlp=False,
            architecture=archs[0],
            rms_norm_eps=1e-5,
            weight_dtype=weight_dtype,
            checkpoint_quant=weight_dtype,
        )
    if family == "chatglm":
        heads = need("num_attention_heads")
        return ModelSpec(
            name=name,
            family="chatglm",
            hidden_size=need("hidden_size"),
            intermediate_size=need("ffn_hidden_size"),
            num_hidden_layers=need("num_layers"),
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("multi_query_group_num", heads)
            if cfg.get("multi_query_attention")
            else heads,
            vocab_size=cfg.get("padded_vocab_size") or need("vocab_size"),
            max_position_embeddings=cfg.get("seq_length", 2048),
            rms_norm_eps=cfg.get("layernorm_epsilon", 1e-5),
            tie_word_embeddings=False,
            dtype=dtype,
            attention_bias=bool(cfg.get("add_qkv_bias", True)),
            head_dim_override=cfg.get("kv_channels"),
            architecture=archs[0],
            weight_dtype=weight_dtype,
            checkpoint_quant=weight_dtype,
        )
    heads = need("num_attention_heads")
    kw: dict[str, Any] = dict(
        name=name,
        family=family,
        hidden_size=need("hidden_size"),
        num_hidden_layers=need("num_hidden_layers"),
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        vocab_size=need("vocab_size"),
        max_position_embeddings=need("max_position_embeddings"),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", family in ("gemma2", "gemma3"))),
        dtype=dtype,
        head_dim_override=cfg.get("head_dim"),
        architecture=archs[0],
        attention_bias=bool(cfg.get("attention_bias", family in ("qwen2", "qwen2_moe"))),
        weight_dtype=weight_dtype,
        checkpoint_quant=weight_dtype,
    )
    if cfg.get("mlp_bias"):
        raise refuse("mlp_bias")
    if family in ("qwen2", "qwen3", "qwen2_moe", "qwen3_moe") and cfg.get("use_sliding_window"):
        raise refuse("use_sliding_window with max_window_layers")
    if family in ("qwen3", "qwen3_moe", "gemma3"):
        kw["qk_norm"] = True
    if family in ("gemma2", "gemma3"):
        kw["norms_per_layer"] = 4
        kw["sliding_window"] = int(need("sliding_window"))
        if isinstance(cfg.get("layer_types"), list):
            kw["sliding_window_pattern"] = _sliding_pattern(cfg["layer_types"], name)
        else:
            kw["sliding_window_pattern"] = 2 if family == "gemma2" else int(need("sliding_window_pattern"))
    elif family in ("mistral", "phi3", "mixtral") and cfg.get("sliding_window"):
        kw["sliding_window"] = int(cfg["sliding_window"])  # every layer slides
    if family in ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v2", "deepseek_v3"):
        if family == "mixtral":
            kw["num_experts"] = need("num_local_experts")
            kw["moe_intermediate_size"] = need("intermediate_size")
        elif family.startswith("qwen"):
            kw["num_experts"] = need("num_experts")
            kw["moe_intermediate_size"] = need("moe_intermediate_size")
            if int(cfg.get("decoder_sparse_step", 1)) != 1 or cfg.get("mlp_only_layers"):
                raise refuse("decoder_sparse_step != 1 or mlp_only_layers (mixed dense/MoE interleaving)")
            if family == "qwen2_moe":
                kw["shared_expert_intermediate_size"] = need("shared_expert_intermediate_size")
        else:
            kw["num_experts"] = need("n_routed_experts")
            kw["moe_intermediate_size"] = need("moe_intermediate_size")
            kw["num_shared_experts"] = int(cfg.get("n_shared_experts") or 0)
            kw["first_k_dense"] = int(cfg.get("first_k_dense_replace", 0))
            if int(cfg.get("moe_layer_freq", 1)) != 1:
                raise refuse("moe_layer_freq != 1")
            kw["router_bias"] = cfg.get("topk_method") == "noaux_tc"
            kw["q_lora_rank"] = int(cfg.get("q_lora_rank") or 0)
            for key in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                kw[key] = int(need(key))
        kw["num_experts_per_tok"] = need("num_experts_per_tok")
        kw["intermediate_size"] = int(cfg.get("intermediate_size") or kw["moe_intermediate_size"])
        if family.startswith("deepseek") and kw["first_k_dense"]:
            kw["intermediate_size"] = int(need("intermediate_size"))
    else:
        kw["intermediate_size"] = need("intermediate_size")
    return ModelSpec(**kw)
