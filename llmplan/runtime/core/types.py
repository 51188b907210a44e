"""The contract of the serving core: one scheduler loop, two clocks.

The scheduler (``llmplan.runtime.core``) owns request state, the paged KV block
allocator, admission, preemption and the call into a batch policy. Each iteration it
hands a :class:`ScheduledBatch` to an :class:`Executor`:

* the simulator's executor prices the batch with the planner's cost model
  (``llmplan.plan.costmodel``) or a calibration profile and advances a virtual clock;
* the engine's executor runs a real torch forward pass over the paged KV cache and
  samples tokens, and the clock is the wall clock.

The scheduler never knows which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Protocol

from llmplan.workload.types import RequestSpec


class SeqStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # KV dropped; recomputed when re-admitted
    FINISHED = "finished"
    REJECTED = "rejected"
    ABORTED = "aborted"


class FinishReason(StrEnum):
    """Why a sequence left the scheduler. String-valued: it compares equal to, and serialises
    (JSON, logs, reports) as, the plain word, so the wire format is unchanged."""

    LENGTH = "length"  # generated its output_tokens / max_tokens
    STOP = "stop"  # a stop string or stop token (engine)
    EOS = "eos"  # the model's end-of-sequence token (engine)
    MAX_MODEL_LEN = "max_model_len"  # reached the longest sequence the instance serves
    ABORT = "abort"  # the client left or the engine was stopped
    ERROR = "error"  # the engine failed on this request
    # Not an end: a prefill instance hands the sequence (and its KV) to a decode instance.
    HANDOFF = "handoff"


@dataclass(slots=True)
class SeqState:
    """A request inside an instance."""

    spec: RequestSpec
    status: SeqStatus = SeqStatus.WAITING
    # Engine only: real token ids (prompt, then generated). The simulator leaves them empty.
    prompt_token_ids: list[int] = field(default_factory=list)
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_generated: int = 0
    block_ids: list[int] = field(default_factory=list)
    predicted_output_tokens: int | None = None  # point estimate (e.g. the p50)
    predicted_bucket: int | None = None
    # Issue 22: what length-aware policies order by (higher = longer; None: the point estimate)
    # and the calibrated upper bound KV booking reserves (None: the point estimate).
    predicted_rank: float | None = None
    predicted_upper: int | None = None
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0
    token_times_s: list[float] | None = None
    # A FinishReason once the sequence stopped (or was handed off); for a REJECTED sequence a
    # free-text message saying why (and what to change).
    finish_reason: FinishReason | str | None = None
    # The engine's per-request payload, opaque to the core: llm_engine's RequestState (read back
    # with llm_engine.request_state); None in the simulator and in measurement runs (greedy).
    sampling: object | None = None
    # Added by the serving core (all optional, defaults keep older callers working):
    reserved_tokens: int = 0  # KV slots booked at admission (prompt + predicted output, policy-dependent)
    mispredicted: bool = False  # generated more tokens than its predicted bound (booked_output_tokens)
    transferred_tokens: int = 0  # KV tokens that arrive with the request (P/D hand-off), not recomputed
    arrival_seq: int = 0  # order of arrival at this instance (FCFS tie-break, victim choice)

    @property
    def rid(self) -> int:
        return self.spec.rid

    @property
    def booked_output_tokens(self) -> int | None:
        """Output tokens a prediction-booking policy reserves: the predicted upper bound, else the
        point estimate; None without a prediction."""
        u = self.predicted_upper
        return u if u is not None else self.predicted_output_tokens

    @property
    def total_len(self) -> int:
        """Tokens the sequence occupies once the pending step has run."""
        return self.spec.prompt_tokens + self.num_generated


@dataclass(slots=True)
class ScheduledSeq:
    seq: SeqState
    num_new_tokens: int  # prefill chunk length, or 1 for a decode step
    context_len: int  # tokens already in the KV cache before this step
    is_prefill: bool
    # Added (optional): tokens [0, cached_prefix) the executor promised through the scheduler's
    # prefix probe at admission and supplies in this step without computing them (loaded from a
    # KV store); context_len == cached_prefix then. 0: the KV of [0, context_len) is in the pool.
    cached_prefix: int = 0


@dataclass(slots=True)
class ScheduledBatch:
    items: list[ScheduledSeq]
    # Static-batching policies pad every sequence to the batch's longest; the executor
    # prices (or computes) the padded shape and the scheduler counts the waste.
    padded_tokens: int = 0
    # The padded part of the shape, for executors that price it (the simulator); a real engine
    # may skip the padding and only run ``items``. Decode padding: finished members of a static
    # batch that still occupy a slot until the batch's longest request finishes.
    pad_prefill_tokens: int = 0
    pad_prefill_attn: float = 0.0
    pad_decode_seqs: int = 0
    pad_decode_ctx: int = 0

    @property
    def num_prefill_tokens(self) -> int:
        return sum(i.num_new_tokens for i in self.items if i.is_prefill)

    @property
    def num_decode(self) -> int:
        return sum(1 for i in self.items if not i.is_prefill)


@dataclass(slots=True)
class StepResult:
    """What an executor returns for one iteration."""

    duration_s: float
    # Engine: the sampled token per sequence that produced one this step (rid -> token id).
    # Simulator: None; the core counts one token per decode/last-prefill-chunk step and
    # stops a sequence when it reaches spec.output_tokens.
    next_tokens: dict[int, int] | None = None


class Executor(Protocol):
    def execute(self, batch: ScheduledBatch) -> StepResult: ...
