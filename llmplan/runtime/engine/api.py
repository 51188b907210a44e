"""The async engine API that the HTTP server (and the vLLM front end) talk to.

The built-in torch engine implements :class:`AsyncEngine`; the server in
``llmplan.runtime.server`` depends only on this protocol.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from llmplan.workload.types import SLO

# Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS): dividing logits by a
# tiny temperature overflows fp32 to inf, whose softmax is NaN.
GREEDY_TEMPERATURE = 1e-5


@dataclass(slots=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # below GREEDY_TEMPERATURE (1e-5) greedy
    top_p: float = 1.0
    top_k: int = -1  # -1 (or 0): all tokens
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    seed: int | None = None


@dataclass(slots=True)
class GenerateRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    slo: SLO = field(default_factory=SLO)
    prompt: str | None = None  # original text, for the length predictor


@dataclass(slots=True)
class GenerateOutput:
    """One streamed increment. The last one has ``finished=True`` and a finish_reason."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool = False
    finish_reason: str | None = None  # "length" | "stop" | "abort" | "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


@dataclass(slots=True)
class EngineStats:
    waiting: int = 0
    running: int = 0
    kv_blocks_used: int = 0
    kv_blocks_total: int = 0
    preemptions_total: int = 0
    finished_total: int = 0
    predictor_correct: int = 0
    predictor_total: int = 0
    # The router's load snapshot (llmplan.routing.base.InstanceLoad), as the simulator fills it:
    waiting_tokens: int = 0  # prompt tokens still to prefill in the queue
    busy_seconds_total: float = 0.0  # time spent executing steps (busy share = its rate)
    # GPU prefix cache (llmplan.runtime.core.blocks): prompt tokens looked up / found at admission.
    prefix_cache_queries_total: int = 0
    prefix_cache_hits_total: int = 0


class Tokenizer(Protocol):
    eos_token_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class AsyncEngine(Protocol):
    model_name: str
    max_model_len: int
    tokenizer: Tokenizer

    async def start(self) -> None: ...

    def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateOutput]:
        """Submit a request and stream its outputs. Raises QueueFullError when the
        waiting queue is at capacity (the server answers 429)."""
        ...

    async def abort(self, request_id: str) -> None:
        """Cancel a request and free its KV blocks; its stream ends with finish_reason 'abort'."""
        ...

    def stats(self) -> EngineStats: ...

    async def shutdown(self, drain: bool = True) -> None:
        """Stop accepting; with drain, finish running requests first."""
        ...


class QueueFullError(Exception):
    """The engine's waiting queue is full; retry after ``retry_after_s``."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__(f"queue full; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class InvalidRequestError(ValueError):
    """The request cannot run on this engine (empty prompt, prompt + max_tokens beyond the
    context, token ids outside the vocabulary); the server answers 400 with this message."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class EngineClosedError(RuntimeError):
    """The engine is shutting down (or not started) and accepts no new requests (HTTP 503)."""
