"""Decode fast-forward: the simulator's way to apply a run of identical decode steps at once.

When every running sequence only decodes, nothing can be admitted until one finishes or a new
request arrives, and the KV pool holds the run, the next ``k`` iterations are the same batch
growing by one token per step. :meth:`DecodeFastForward.decode_run_limit` finds ``k``;
:meth:`DecodeFastForward.apply_decode_run` applies ``k`` steps in one call, with a result
identical to calling ``schedule``/``update`` ``k`` times. The engine never uses it (its stop
rule's ``steps_left`` is None).

:class:`DecodeFastForward` is a part of :class:`~llmplan.runtime.core.scheduler.Scheduler`
(a mixin over the scheduler's state, declared below); it is kept apart so that the one-step
path reads on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmplan.runtime.core.blocks import BlockManager, blocks_for
from llmplan.runtime.core.config import SchedulerConfig, SchedulerStats
from llmplan.runtime.core.static import StaticBatch
from llmplan.runtime.core.stop import StopRule
from llmplan.runtime.core.types import ScheduledBatch, SeqState

_INF = float("inf")


class DecodeFastForward:
    """The scheduler's decode fast-forward (see the module docstring)."""

    # The scheduler state it reads and advances (set by Scheduler.__init__ and schedule()).
    config: SchedulerConfig
    stop: StopRule
    blocks: BlockManager
    stats: SchedulerStats
    waiting: list[SeqState]
    running: list[SeqState]
    _static: StaticBatch | None
    _admission_stable: bool  # schedule() admitted nothing and nothing can join until an input changes
    _stable_until: float

    def _check_prediction(self, seq: SeqState) -> None:
        raise NotImplementedError  # the scheduler's

    def _after_token(self, seq: SeqState, now: float) -> bool:
        raise NotImplementedError  # the scheduler's

    def decode_run_limit(self, batch: ScheduledBatch, max_steps: int) -> int:
        """How many consecutive iterations, starting with ``batch`` (just scheduled), are pure
        decode steps of exactly this set of sequences: no admission, no preemption, no
        finish before the last of them. Always >= 1.

        The simulator uses it to price and apply those steps in one go
        (:meth:`apply_decode_run`); the result is identical to calling schedule/update that
        many times. The engine does not need it.
        """
        items = batch.items
        if max_steps <= 1 or not items or batch.padding.prefill_tokens:
            return 1
        if self.waiting and not self._admission_stable:
            return 1
        if len(items) != len(self.running):
            return 1  # token budget left someone out: not a steady state
        k = self._steps_until_first_stop(batch, max_steps)
        if k <= 1:
            return 1
        return self._steps_the_pool_holds(batch, k)

    def _steps_until_first_stop(self, batch: ScheduledBatch, k: int) -> int:
        """``k`` capped by the first stop among the batch's sequences (1: a prefill, or a stop
        that depends on sampled tokens)."""
        max_len = self.config.max_model_len
        assert max_len is not None  # SchedulerConfig fills it
        steps_left = self.stop.steps_left
        for it in batch.items:
            if it.is_prefill:
                return 1
            seq = it.seq
            left = steps_left(seq)
            if left is None:
                return 1
            cap_left = max_len - seq.spec.prompt_tokens - seq.num_generated
            if cap_left < left:
                left = cap_left
            if left < k:
                k = left
        return k

    def _steps_the_pool_holds(self, batch: ScheduledBatch, k: int) -> int:
        """The longest run of at most ``k`` steps whose KV growth fits the free blocks."""
        items = batch.items
        bs = self.config.block_size
        free = self.blocks.num_free
        # Each sequence already holds the slot of step 1; over k steps it needs at most
        # ceil((k-1)/bs) more blocks. The common case (plenty of memory) ends here.
        if len(items) * blocks_for(k - 1, bs) <= free:
            return k
        slack = [len(it.seq.block_ids) * bs - it.context_len - 1 for it in items]

        def need(steps: int) -> int:
            extra = steps - 1
            return sum(blocks_for(extra - s, bs) for s in slack if extra > s)

        lo, hi = 1, k  # need(lo) == 0 <= free
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def apply_decode_run(
        self, batch: ScheduledBatch, steps: int, now: float, step_ends: Sequence[float] | None = None
    ) -> list[SeqState]:
        """Apply ``steps`` decode iterations of ``batch`` that end at ``now`` (the last step's
        end); ``step_ends`` gives every step's end time when token times are recorded."""
        stats = self.stats
        stats.steps += steps
        npad = batch.padding.decode_seqs
        stats.padding_tokens += npad * steps
        stats.decode_padding_tokens += npad * steps
        out: list[SeqState] = []
        blocks = self.blocks
        for it in batch.items:
            seq = it.seq
            c = it.context_len + steps
            seq.num_computed_tokens = c
            seq.num_generated += steps
            if not blocks.ensure(seq, c):
                raise AssertionError("decode_run_limit admitted a run the KV pool cannot hold")
            if seq.token_times_s is not None:
                if step_ends is None:
                    raise ValueError("record_token_times needs step_ends for a decode run")
                seq.token_times_s.extend(step_ends)
            self._check_prediction(seq)
            if self._after_token(seq, now):
                out.append(seq)
        stats.decode_tokens += len(batch.items) * steps
        if self._static is not None:
            self._static.after_steps(npad * steps, self.running)
        return out

    @property
    def admission_stable_until(self) -> float:
        """After ``schedule``: the time until which a decode run found by
        :meth:`decode_run_limit` stays valid (``inf`` unless the policy reads the clock and
        requests are waiting). A run must keep only steps that end before it."""
        return self._stable_until if self.waiting else _INF
