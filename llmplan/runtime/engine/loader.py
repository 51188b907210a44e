"""Weights: HF safetensors checkpoints mapped onto the engine's fused layout, or random.

HF names (``model.layers.{i}.self_attn.q_proj.weight`` ...) map onto the fused
``qkv_proj`` / ``gate_up_proj`` parameters by row offset, as vLLM's loaders do. Layers
outside the model's range are skipped without being read, so a pipeline stage loads only
its own slice of the checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.engine.model import LlamaModel

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# HF sub-name -> (engine parameter, shard id). Shard ids index the fused row blocks.
_FUSED = {
    "self_attn.q_proj": ("qkv_proj", 0),
    "self_attn.k_proj": ("qkv_proj", 1),
    "self_attn.v_proj": ("qkv_proj", 2),
    "mlp.gate_proj": ("gate_up_proj", 0),
    "mlp.up_proj": ("gate_up_proj", 1),
}
_PLAIN = {
    "self_attn.o_proj": "o_proj",
    "mlp.down_proj": "down_proj",
    "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm",
}


def iter_safetensors(model_dir: str | Path) -> Iterator[tuple[str, LazyTensor]]:
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise LlmplanError(
            f"no *.safetensors files in {model_dir}; the engine loads safetensors checkpoints only "
            "(convert .bin weights with `transformers` save_pretrained(safe_serialization=True))"
        )
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                yield name, LazyTensor(fh, name)


class LazyTensor:
    """A checkpoint tensor read only if the model keeps it."""

    __slots__ = ("_fh", "_name")

    def __init__(self, fh, name: str) -> None:
        self._fh, self._name = fh, name

    def load(self) -> torch.Tensor:
        return self._fh.get_tensor(self._name)


def _rows(model: LlamaModel, param: str, shard: int) -> tuple[int, int]:
    cfg = model.cfg
    if param == "qkv_proj":
        sizes = (cfg.q_size, cfg.kv_size, cfg.kv_size)
    else:
        sizes = (cfg.intermediate_size, cfg.intermediate_size)
    start = sum(sizes[:shard])
    return start, start + sizes[shard]


def load_hf_weights(model: LlamaModel, model_dir: str | Path) -> None:  # noqa: C901 - one branch per checkpoint tensor kind (fused, plain, embeddings, norm, head) plus the fill check
    """Copy an HF checkpoint's tensors into ``model``; every owned parameter must be filled."""
    cfg = model.cfg
    filled: set[str] = set()
    own = dict(model.named_parameters())
    layer_pos = {layer.index: k for k, layer in enumerate(model.layers)}

    def put(dst: torch.Tensor, src: torch.Tensor, what: str) -> None:
        if tuple(dst.shape) != tuple(src.shape):
            raise LlmplanError(
                f"checkpoint tensor {what} has shape {tuple(src.shape)}, the config implies "
                f"{tuple(dst.shape)}; config.json and the weights disagree"
            )
        dst.copy_(src.to(dtype=dst.dtype))

    with torch.no_grad():
        for name, lazy in iter_safetensors(model_dir):
            if name.endswith("rotary_emb.inv_freq"):
                continue
            m = _LAYER.match(name)
            if m:
                idx, rest = int(m.group(1)), m.group(2)
                if idx not in layer_pos:
                    continue  # another stage's layer
                prefix = f"layers.{layer_pos[idx]}"
                sub, kind = rest.rsplit(".", 1)  # kind: weight | bias
                if sub in _FUSED:
                    param, shard = _FUSED[sub]
                    key = f"{prefix}.{param}.{kind}"
                    lo, hi = _rows(model, param, shard)
                    put(own[key][lo:hi], lazy.load(), name)
                    filled.add(f"{key}#{shard}")
                    continue
                if sub in _PLAIN:
                    key = f"{prefix}.{_PLAIN[sub]}.{kind}"
                    put(own[key], lazy.load(), name)
                    filled.add(key)
                    continue
                raise LlmplanError(
                    f"unexpected checkpoint tensor {name}; is this a Llama/Mistral/Qwen2 model?"
                )
            if name == "model.embed_tokens.weight":
                if model.embed_tokens is not None:
                    put(model.embed_tokens.weight, lazy.load(), name)
                    filled.add("embed_tokens.weight")
                if model.is_last and cfg.tie_word_embeddings and model.embed_tokens is None:
                    put(model.lm_head_weight, lazy.load(), name)
                    filled.add("lm_head_weight")
            elif name == "model.norm.weight":
                if model.is_last:
                    put(model.norm.weight, lazy.load(), name)
                    filled.add("norm.weight")
            elif name == "lm_head.weight":
                if model.is_last and not cfg.tie_word_embeddings:
                    put(model.lm_head_weight, lazy.load(), name)
                    filled.add("lm_head_weight")
            else:
                raise LlmplanError(
                    f"unexpected checkpoint tensor {name}; is this a Llama/Mistral/Qwen2 model?"
                )

    expected: set[str] = set()
    for pname in own:
        if ".qkv_proj." in pname:
            expected |= {f"{pname}#{s}" for s in range(3)}
        elif ".gate_up_proj." in pname:
            expected |= {f"{pname}#{s}" for s in range(2)}
        else:
            expected.add(pname)
    if cfg.tie_word_embeddings and model.embed_tokens is not None:
        expected.discard("lm_head_weight")
    missing = sorted(expected - filled)
    if missing:
        raise LlmplanError(
            f"checkpoint in {model_dir} lacks {len(missing)} tensor(s), e.g. {missing[0]}; "
            "the directory is incomplete or for another architecture"
        )


def init_dummy_weights(model: LlamaModel, seed: int = 0, std: float = 0.02) -> None:
    """Random weights (normal(0, std), norms at 1) for benchmarks; deterministic per seed.

    Generated on CPU so the same seed gives the same model on every device.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std).to(p.dtype))
