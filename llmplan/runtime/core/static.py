"""Static batching, the scheduler's second mode (UELLM / S3 comparisons, ``policy.static``).

A static batch is formed when the previous one has drained: the policy's candidates are admitted
up to memory and ``max_num_seqs`` (no token budget), prefilled together padded to the longest
prompt, and decoded together until the longest member finishes. Nothing joins meanwhile; a
member that finishes early keeps its slot as padding (priced by the simulator, counted in
``SchedulerStats``) while its KV is freed so the others can still grow.

:class:`StaticBatch` holds the batch's state; the :class:`~llmplan.runtime.core.scheduler.Scheduler`
owns one when its policy is static and calls it at each seam (schedule, finish, preempt/abort,
after a step).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from llmplan.runtime.core.types import BatchPadding, ScheduledBatch, ScheduledSeq, SeqState

# A static batch is bounded by memory and max_num_seqs, not by a token budget.
_NO_TOKEN_BUDGET = 1 << 62


class StaticCore(Protocol):
    """What static batching uses of the scheduler: its queues, growth with preemption, and
    admission through the policy."""

    running: list[SeqState]
    waiting: list[SeqState]
    _preempted_this_step: bool

    def _grow(self, seq: SeqState, tokens: int) -> bool: ...

    def _admit(self, items: list[ScheduledSeq], budget: int, has_prefill: bool, now: float) -> int: ...


@dataclass(slots=True)
class StaticBatch:
    members: list[SeqState] = field(default_factory=list)
    done: list[SeqState] = field(default_factory=list)  # finished, padding until the batch drains
    pad_ctx: int = 0  # sum of the padding slots' context lengths

    def schedule(self, core: StaticCore, now: float) -> tuple[ScheduledBatch, bool]:
        """This iteration's batch and whether admission is stable (see
        ``Scheduler.decode_run_limit``): a running batch decodes one token per live member, with
        the finished ones as padding; a drained one is replaced by a new batch, padded to its
        longest prompt."""
        running = core.running
        if running:
            items = []
            i = 0
            while i < len(running):
                seq = running[i]
                c = seq.num_computed_tokens
                if not core._grow(seq, c + 1):
                    break
                items.append(ScheduledSeq(seq, 1, c, False))
                i += 1
            stable = not core._preempted_this_step
            if items or running:
                npad = len(self.done)
                batch = ScheduledBatch(items, BatchPadding(decode_seqs=npad, decode_ctx=self.pad_ctx))
                return batch, stable
            # Every member was preempted: the batch is over; form a new one now.
        self.drain_if_idle(running)  # normally already done by update(); abort can empty a batch too
        items = []
        if core.waiting:
            core._admit(items, _NO_TOKEN_BUDGET, False, now)
        self.members = [it.seq for it in items]
        if not items:
            return ScheduledBatch(items), False
        longest = max(it.num_new_tokens for it in items)
        pad = sum(longest - it.num_new_tokens for it in items)
        pad_attn = sum(longest * longest / 2 - it.num_new_tokens * it.num_new_tokens / 2 for it in items)
        return ScheduledBatch(items, BatchPadding(prefill_tokens=pad, prefill_attn=pad_attn)), False

    def discard(self, seq: SeqState) -> None:
        """A member left without finishing (preempted or aborted): it holds no slot any more."""
        if seq in self.members:
            self.members.remove(seq)

    def finished(self, seq: SeqState) -> None:
        """A member finished: its slot stays in the batch as padding (priced and counted) until
        the longest member finishes."""
        self.done.append(seq)
        self.pad_ctx += seq.num_computed_tokens

    def after_steps(self, pad_slot_steps: int, running: list[SeqState]) -> None:
        """Account steps that ran (each padding slot's context grows by one per step) and end
        the batch if its last member finished."""
        self.pad_ctx += pad_slot_steps
        self.drain_if_idle(running)

    def drain_if_idle(self, running: list[SeqState]) -> None:
        """A static batch whose last member finished is over: its padding slots go away."""
        if not running:
            self.done.clear()
            self.members.clear()
            self.pad_ctx = 0
