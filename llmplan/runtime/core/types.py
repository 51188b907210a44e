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
from typing import Generic, Protocol, TypeVar

from llmplan.workload.types import RequestSpec


class SeqStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # KV dropped; recomputed when re-admitted
    FINISHED = "finished"
    REJECTED = "rejected"
    ABORTED = "aborted"
    # Left a prefill instance with its KV for a decode instance (P/D): not an end. The
    # simulator and the P/D engines tell a hand-off from a finish by this status.
    HANDED_OFF = "handed_off"


class FinishReason(StrEnum):
    """Why a sequence left the scheduler. String-valued: it compares equal to, and serialises
    (JSON, logs, reports) as, the plain word, so the wire format is unchanged."""

    LENGTH = "length"  # generated its output_tokens / max_tokens
    STOP = "stop"  # a stop string or stop token (engine)
    EOS = "eos"  # the model's end-of-sequence token (engine)
    MAX_MODEL_LEN = "max_model_len"  # reached the longest sequence the instance serves
    ABORT = "abort"  # the client left or the engine was stopped
    ERROR = "error"  # the engine failed on this request
    # Not an end: a prefill instance handed the sequence (and its KV) to a decode instance. The
    # reason a handed-off sequence shows; the control signal is its status, SeqStatus.HANDED_OFF.
    HANDOFF = "handoff"


# The engine's per-request payload type (llm_engine's RequestState); the core never reads it.
P = TypeVar("P")


@dataclass(slots=True)
class SeqState(Generic[P]):
    """A request inside an instance. ``SeqState[P]``: ``payload`` is a ``P`` (the engine's
    ``SeqState[RequestState]``); the simulator's sequences carry none."""

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
    # with request_state.request_state); None in the simulator and in measurement runs (greedy).
    payload: P | None = None
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
    """One sequence's work in a step.

    Invariants: ``num_new_tokens >= 1``; ``context_len + num_new_tokens <= seq.total_len``
    (a step never computes a token the sequence does not know yet); the KV slots
    ``[0, context_len + num_new_tokens)`` exist in ``seq.block_ids`` when the step runs. The step
    samples a token for this sequence iff ``context_len + num_new_tokens == seq.total_len``
    (every decode step, and the last chunk of a prefill or recompute).
    """

    seq: SeqState
    # Tokens this step computes (KV written, positions [context_len, context_len + n)): a prefill
    # chunk's length, or 1 for a decode step.
    num_new_tokens: int
    # Tokens whose KV is already in the sequence's blocks before this step (a position: the first
    # new token's index).
    context_len: int
    # True while the sequence still computes known tokens (its prompt, or prompt + output after a
    # preemption); False for a decode step (num_new_tokens == 1, one sampled token fed back).
    is_prefill: bool
    # Tokens [0, cached_prefix) the executor promised through the scheduler's prefix probe at
    # admission and supplies in this step without computing them (loaded from a KV store);
    # context_len == cached_prefix then. 0: the KV of [0, context_len) is in the pool already.
    cached_prefix: int = 0


@dataclass(frozen=True, slots=True)
class BatchPadding:
    """The padded part of a static batch's shape: slots a static batch computes but that carry
    no sequence's work. Simulator-only in effect: the cost-model executor prices it
    (``llmplan.runtime.sim.pricing.batch_shape``); a real engine may run ``items`` alone.

    Invariants: all fields >= 0; a batch pads its prefill (``prefill_*``, when a static batch is
    formed) or its decode (``decode_*``, while it drains), never both.
    """

    # Prompt tokens added to pad every prompt to the batch's longest (tokens).
    prefill_tokens: int = 0
    # The attention work of that prefill padding (token pairs: sum over members of
    # (longest^2 - prompt^2) / 2), in the unit of BatchShape.prefill_attn.
    prefill_attn: float = 0.0
    # Finished members of a static batch that still hold a decode slot until its longest member
    # finishes (sequences; one padding token each per step).
    decode_seqs: int = 0
    # Sum of those slots' context lengths (tokens), i.e. their decode attention span.
    decode_ctx: int = 0

    @property
    def tokens(self) -> int:
        """Tokens of padding this step (prefill padding tokens + one per padded decode slot)."""
        return self.prefill_tokens + self.decode_seqs


NO_PADDING = BatchPadding()


@dataclass(slots=True)
class ScheduledBatch:
    """What :meth:`Scheduler.schedule <llmplan.runtime.core.scheduler.Scheduler.schedule>` hands
    the executor for one step (vLLM v1's ``SchedulerOutput``).

    Invariants: a sequence appears at most once in ``items``; every item's sequence is RUNNING
    when the step starts; the token budget holds (``sum(num_new_tokens) <=
    max_num_batched_tokens``, except a prompt longer than the budget running alone among
    prefills without chunked prefill, and a static batch, bounded by memory only); an empty
    ``items`` means there is nothing to run.
    """

    # The sequences this step computes, running ones first (admission order), then those
    # admitted this step.
    items: list[ScheduledSeq]
    # Static batching only: the padded part of the shape (NO_PADDING otherwise).
    padding: BatchPadding = NO_PADDING

    @property
    def padded_tokens(self) -> int:
        """Tokens of padding in this step (0 unless a static policy pads): counted in
        ``SchedulerStats.padding_tokens``."""
        return self.padding.tokens

    @property
    def num_prefill_tokens(self) -> int:
        """Tokens computed by prefill items (chunked prefill, recompute included), padding excluded."""
        return sum(i.num_new_tokens for i in self.items if i.is_prefill)

    @property
    def num_decode(self) -> int:
        """Sequences that decode one token this step."""
        return sum(1 for i in self.items if not i.is_prefill)


@dataclass(slots=True)
class StepResult:
    """What an executor returns for one step, passed back to ``Scheduler.update``."""

    # How long the step took (seconds): wall time in the engine, the cost model's price in the
    # simulator. >= 0. The scheduler does not read it; callers add it to their clock.
    duration_s: float
    # Engine: the sampled token id (0 <= id < vocabulary size) of each sequence that sampled one
    # this step, keyed by ``SeqState.rid``; exactly the items whose step reached their known
    # length (see ScheduledSeq). A sequence missing from it is still counted as having emitted a
    # token, with no id appended. Simulator: None; the core counts one token per such item and
    # the stop rule ends a sequence at ``spec.output_tokens``.
    next_tokens: dict[int, int] | None = None


class Executor(Protocol):
    def execute(self, batch: ScheduledBatch) -> StepResult: ...
