"""`llmplan serve` options checked before anything loads or binds: a bad value is one line, exit 2.

Kept apart from ``serve.py`` so the checks can be reused (and read) in one place: every number
finite and in range, every name one the engine knows, every file a readable text file.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from llmplan.errors import LlmplanError
from llmplan.validate import MAX_COUNT, integer, number, positive, read_text

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
_DTYPES = ("float32", "bfloat16", "float16")


def check_device_dtype(device: str, dtype: str) -> None:
    """``--device`` and ``--dtype`` of the built-in engine (serve, calibrate)."""
    if not _DEVICE.match(device.strip().lower()):
        raise LlmplanError(f"unknown --device {device!r}; use cpu, cuda or cuda:N")
    if dtype.lower() not in _DTYPES:
        raise LlmplanError(f"unknown --dtype {dtype!r}; use one of {', '.join(_DTYPES)}")


def check_serve_options(  # noqa: C901 - a flat list of independent option checks, each one refusal line
    *,
    model: Path | None,
    dummy_weights: str | None,
    plan: Path | None,
    device: str,
    dtype: str,
    scheduler: str,
    predictor: str | None,
    engine_kind: str,
    log_level: str,
    threads: int | None,
    max_model_len: int | None,
    num_kv_blocks: int | None,
    block_size: int,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    drain_timeout: float,
    control_interval: float,
    worker_timeout: float,
    worker_memory_gb: float | None,
    workers: int,
    instances: int,
    max_inflight: int,
    health_timeout: float,
    max_restarts: int,
) -> None:
    if engine_kind not in ("builtin", "vllm"):
        raise LlmplanError(f"unknown --engine {engine_kind!r}; choose builtin or vllm")
    if engine_kind == "builtin":
        if model is not None and dummy_weights is not None:
            raise LlmplanError("give exactly one of --model PATH or --dummy-weights NAME (e.g. llama-tiny)")
        if model is not None and not model.expanduser().is_dir():
            what = "is a file" if model.expanduser().exists() else "does not exist"
            raise LlmplanError(f"--model {model} {what}; point it at a local Hugging Face model directory")
        cfg = None
        if dummy_weights is not None:
            from llmplan.runtime.engine.config import catalog_config

            cfg = catalog_config(dummy_weights)  # an unknown name: the catalog's one-line refusal
        elif model is not None:
            from llmplan.runtime.engine.config import load_hf_config

            cfg = load_hf_config(model.expanduser())
        if cfg is not None and max_model_len is not None and max_model_len > cfg.max_model_len:
            from llmplan.runtime.factory import served_context

            served_context(cfg.max_model_len, max_model_len, cfg.name)  # refused before any weight loads
    check_device_dtype(device, dtype)
    if log_level.upper() not in logging.getLevelNamesMapping():
        raise LlmplanError(f"unknown --log-level {log_level!r}; use debug, info, warning or error")
    from llmplan.batch import get_policy

    get_policy(scheduler)
    if predictor is not None and predictor.strip().lower() not in ("oracle", "none"):
        if predictor.strip().lower().startswith("noisy:"):
            from llmplan.predict.oracle import parse_predictor

            parse_predictor(predictor)
        elif not Path(predictor).expanduser().is_dir():
            raise LlmplanError(
                f"--predictor {predictor!r} is neither oracle, noisy:ACC nor a predictor directory; "
                "train one with `llmplan predict train --out DIR`"
            )
    if threads is not None:
        integer(threads, "--threads", lo=1, hi=4096)
    if max_model_len is not None:
        integer(max_model_len, "--max-model-len", lo=1, hi=MAX_COUNT)
    if num_kv_blocks is not None:
        integer(num_kv_blocks, "--num-kv-blocks", lo=1, hi=1 << 32)
    integer(block_size, "--block-size", lo=1, hi=1 << 16, fix="tokens per KV block, e.g. 16")
    integer(max_num_seqs, "--max-num-seqs", lo=1, hi=1 << 20)
    integer(max_num_batched_tokens, "--max-num-batched-tokens", lo=1, hi=MAX_COUNT)
    number(drain_timeout, "--drain-timeout", lo=0, hi=86_400, fix="seconds, e.g. 30")
    positive(control_interval, "--control-interval", fix="seconds, e.g. 1")
    positive(worker_timeout, "--worker-timeout", fix="seconds, e.g. 120")
    if worker_memory_gb is not None:
        positive(worker_memory_gb, "--worker-memory-gb")
    integer(workers, "--workers", lo=1, hi=256)
    integer(instances, "--instances", lo=1, hi=256)
    integer(max_inflight, "--max-inflight", lo=1)
    positive(health_timeout, "--health-timeout", fix="seconds, e.g. 300")
    integer(max_restarts, "--max-restarts", lo=0, hi=1_000_000)
    if plan is not None:
        read_text(plan, "plan file", "write one with `llmplan plan --out plan.json`")
