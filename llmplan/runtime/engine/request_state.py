"""The engine's per-request state, carried by the serving core as ``SeqState.payload``.

Kept apart from :mod:`llmplan.runtime.engine.llm_engine` so the executors (which read each
request's sampler) and the engine share one typed definition without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llmplan.runtime.core.types import SeqState
from llmplan.runtime.engine.api import GenerateOutput, GenerateRequest
from llmplan.runtime.engine.sampling import RequestSampler
from llmplan.runtime.engine.tokenizer import IncrementalDetokenizer

Sink = Callable[[GenerateOutput], None]


@dataclass(slots=True)
class RequestState:
    """Engine-side state of one request; the core carries it opaquely in ``SeqState.payload``."""

    request: GenerateRequest
    sink: Sink
    sampler: RequestSampler
    detok: IncrementalDetokenizer
    eos_ids: frozenset[int]
    streamed_tokens: int = 0
    pending_text: str = ""
    stopped_by_string: bool = False
    done: bool = False
    error: str | None = None  # this request failed (sampling, stop rule, detokenization)
    extra: dict = field(default_factory=dict)


def request_state(seq: SeqState[RequestState]) -> RequestState:
    """The RequestState the engine put in ``seq.payload`` (every sequence an engine schedules
    carries one)."""
    st = seq.payload
    if st is None:
        raise RuntimeError(f"sequence {seq.rid} carries no RequestState (only the engine's sequences do)")
    return st
