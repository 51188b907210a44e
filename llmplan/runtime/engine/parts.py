"""The pieces every engine build shares: dtype and policy resolution, KV sizing, the served context,
the scheduler, the misprediction recorder and the engine loop over an executor.

:mod:`llmplan.runtime.factory` (one process) and :mod:`llmplan.runtime.workers.engine`
(a pipeline of worker processes) both build from these; only the executor differs between them.
They live apart from the factory so the workers need not import the factory that dispatches to
them (no import cycle; docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.core.scheduler import Scheduler, serving_config
from llmplan.runtime.engine.async_engine import AsyncLLMEngine
from llmplan.runtime.engine.config import ModelConfig
from llmplan.runtime.engine.kvcache import bytes_per_block
from llmplan.runtime.engine.llm_engine import LLMEngine
from llmplan.runtime.engine.tokenizer import load_tokenizer

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise LlmplanError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16") from None


def resolve_policy(name: str | Any) -> Any:
    """A batch policy of the simulator's registry (``llmplan.batch.get_policy``), or the object itself."""
    if not isinstance(name, str):
        return name
    from llmplan.batch import get_policy

    return get_policy(name)


def default_num_blocks(
    cfg: ModelConfig,
    block_size: int,
    dtype: torch.dtype,
    devices: list[torch.device],
    max_num_seqs: int,
    max_model_len: int,
    kv_cache_gb: float | None,
) -> int:
    per_block = bytes_per_block(cfg, block_size, dtype)
    if kv_cache_gb is not None:
        budget = kv_cache_gb * 2**30
    elif devices[0].type == "cuda":
        free, _ = torch.cuda.mem_get_info(devices[0])
        budget = 0.8 * free * len({d for d in devices})  # weights are loaded: what is free is KV room
    else:
        budget = 0.5 * 2**30
    want = max_num_seqs * max_model_len // block_size + 1  # more than that can never be used
    return max(1, min(int(budget // per_block), want))


def check_policy(scheduler: str | Any, predictor: Any) -> Any:
    policy = resolve_policy(scheduler)
    if getattr(policy, "uses_prediction", False) and predictor is None:
        raise LlmplanError(
            f"scheduler {policy.name!r} needs a length predictor; pass --predictor (see `llmplan predict`)"
        )
    return policy


def make_scheduler(
    policy: Any,
    num_kv_blocks: int,
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    chunked_prefill: bool,
    max_model_len: int,
    prefix_probe: Any = None,
    prefix_caching: bool = False,
) -> Scheduler:
    return Scheduler(
        serving_config(
            num_blocks=num_kv_blocks,
            block_size=block_size,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            chunked_prefill=chunked_prefill,
            max_model_len=max_model_len,
            static=bool(getattr(policy, "static", False)),
            enable_prefix_caching=prefix_caching,
            contiguous_blocks=True,
        ),
        policy=policy,
        prefix_probe=prefix_probe,
    )


def make_recorder(misprediction_log: str | Path | None, predictor: Any) -> Any:
    if misprediction_log is None:
        return None
    if predictor is None:
        raise LlmplanError("--record-mispredictions needs a length predictor (--predictor)")
    from llmplan.predict.online import MispredictionRecorder

    return MispredictionRecorder(misprediction_log, predictor.bucket_edges)


def assemble_engine(
    cfg: ModelConfig, executor: Any, sch: Scheduler, *, model: str | Path | None, dummy_weights: str | None,
    served_model_name: str | None, max_model_len: int, seed: int, predictor: Any, recorder: Any,
    max_queue: int, collectors: list,
) -> tuple[AsyncLLMEngine, Any]:
    """The engine loop and its async front over ``executor``; returns it and the tokenizer."""
    tok = load_tokenizer(model, cfg.vocab_size)
    name = served_model_name or (str(dummy_weights) if dummy_weights else Path(str(model)).name)
    eng = LLMEngine(cfg, executor, sch, tok, name, max_model_len, seed=seed, predictor=predictor,
                    recorder=recorder)
    engine = AsyncLLMEngine(eng, max_queue=max_queue, model_name=name)
    # Prometheus collectors the server's /metrics registers beside its own (KV store, workers).
    engine.metric_collectors = collectors
    return engine, tok


def served_context(model_limit: int, requested: int | None, model_name: str) -> int:
    """The context length to serve: the model's, or ``--max-model-len`` when it is not larger.
    A request above the model's limit is refused with both numbers, never quietly cut down."""
    if requested is None:
        return model_limit
    if requested < 1:
        raise LlmplanError(f"--max-model-len must be >= 1 (got {requested})")
    if requested > model_limit:
        raise LlmplanError(
            f"--max-model-len {requested} exceeds {model_name}'s context of {model_limit} tokens; "
            f"use --max-model-len {model_limit} or less"
        )
    return requested


def kv_capped_context(max_model_len: int, requested: int | None, num_blocks: int, block_size: int) -> int:
    """The served context given the KV cache: an explicit ``--max-model-len`` the cache cannot hold
    is refused (both numbers named); the model's own default is capped to what fits."""
    capacity = num_blocks * block_size
    if requested is not None and requested > capacity:
        raise LlmplanError(
            f"--max-model-len {requested} needs {requested} KV tokens but the cache holds {capacity} "
            f"({num_blocks} blocks x {block_size}); lower --max-model-len or raise --num-kv-blocks"
        )
    return min(max_model_len, capacity)
