"""The per-instance scheduler: request state, paged KV, admission, preemption, batching.

Both clocks drive it the same way::

    batch = sched.schedule(now)                 # decide this iteration's work
    result = executor.execute(batch)            # torch forward pass, or cost-model pricing
    done = sched.update(batch, result, now2)    # account tokens, stop, free blocks

Token accounting (one rule for prefill, chunked prefill, decode and recompute): a sequence
*knows* ``K = prompt_tokens + num_generated`` tokens and has the KV of
``num_computed_tokens = c`` of them. A step computes ``n <= K - c`` new tokens; when the step
brings ``c`` up to ``K`` the model samples one new token (``num_generated += 1``). A fresh
request therefore prefills its prompt and emits its first token in the same step; a
preempted one re-prefills prompt *and* generated tokens (recompute) and then continues.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from llmplan.runtime.core.blocks import BlockManager, ContiguousBlockManager
from llmplan.runtime.core.config import Role, SchedulerConfig, SchedulerStats, serving_config
from llmplan.runtime.core.fast_forward import DecodeFastForward
from llmplan.runtime.core.limits import kv_rejection, reject
from llmplan.runtime.core.policy import AdmissionView, BatchPolicy, ContinuousFCFS
from llmplan.runtime.core.static import StaticBatch
from llmplan.runtime.core.stop import OutputLengthStop, StopRule
from llmplan.runtime.core.types import (
    FinishReason,
    ScheduledBatch,
    ScheduledSeq,
    SeqState,
    SeqStatus,
    StepResult,
)

__all__ = [
    "OutputLengthStop",
    "PrefixProbe",
    "Role",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
    "StopRule",
    "serving_config",
]

_RUNNING = SeqStatus.RUNNING
_INF = float("inf")


def _default_policy() -> BatchPolicy:
    return ContinuousFCFS()


class PrefixProbe(Protocol):
    """How many leading tokens of a sequence about to be admitted the executor can supply
    without computing them (e.g. KV blocks a global store holds): vLLM's
    ``get_computed_blocks`` at admission. The scheduler rounds the answer down to a block
    boundary and below the sequence's known length, starts the sequence at that context, and
    schedules and budgets only the rest; the step that admits it carries the promise
    (:attr:`ScheduledSeq.cached_prefix`), and the executor must make those tokens' KV present
    in the sequence's blocks in that step -- loading them, or computing whatever it can no
    longer load."""

    def __call__(self, seq: SeqState) -> int: ...


class Scheduler(DecodeFastForward):
    """One serving instance's scheduler. Not thread-safe: the engine calls it from its loop.

    Its parts: continuous batching (here: :meth:`schedule`, :meth:`_admit`, :meth:`update`),
    static batching (:class:`~llmplan.runtime.core.static.StaticBatch`, when the policy is
    static) and the simulator's decode fast-forward
    (:class:`~llmplan.runtime.core.fast_forward.DecodeFastForward`)."""

    def __init__(
        self,
        config: SchedulerConfig,
        policy: BatchPolicy | None = None,
        stop: StopRule | None = None,
        name: str = "instance0",
        prefix_probe: PrefixProbe | None = None,
    ) -> None:
        self.config = config
        self.policy = policy if policy is not None else _default_policy()
        if self.policy.static and (config.role != "both" or config.chunked_prefill):
            raise ValueError(
                f"static batching policy {self.policy.name!r} runs whole batches on one instance: "
                "use it without chunked prefill and without P/D disaggregation"
            )
        self.stop: StopRule = stop if stop is not None else OutputLengthStop()
        self.name = name
        # None: every admitted prompt is computed from token 0 (the simulator, the plain engine).
        self.prefix_probe = prefix_probe
        manager = ContiguousBlockManager if config.contiguous_blocks else BlockManager
        self.blocks = manager(config.num_blocks, config.block_size, config.enable_prefix_caching)
        self.waiting: list[SeqState] = []  # arrival order; preempted sequences go to the front
        self.running: list[SeqState] = []  # admission order; preemption victims come from the tail
        self.seqs: dict[int, SeqState] = {}
        self.stats = SchedulerStats()
        self._arrivals = 0
        self._waiting_tokens = 0
        self._watermark_blocks = int(config.watermark * config.num_blocks)
        self._static = StaticBatch() if self.policy.static else None
        # Set by schedule(): True when the next steps cannot admit anything until a sequence
        # finishes or arrives (see decode_run_limit).
        self._admission_stable = False
        self._stable_until = _INF  # when a time-dependent policy may change its mind
        self._stable_fn: Callable[[Sequence[SeqState], float], float] | None = (
            None if self.policy.time_invariant else self.policy.stable_until
        )
        self._preempted_this_step = False
        self.on_finish: Callable[[SeqState], None] | None = None
        # Called right after a sequence emitted a token in ``update`` and before the stop rule
        # checks it: where an engine advances per-request state (its detokenizer), so the stop
        # rule itself stays a pure check. Not called by apply_decode_run (simulator only).
        self.on_token: Callable[[SeqState], None] | None = None

    # ------------------------------------------------------------------ requests in and out
    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: SeqState, now: float) -> bool:
        """Queue a sequence. Returns False and marks it REJECTED (with ``finish_reason``
        saying why) when it can never run on this instance."""
        reason = kv_rejection(seq.spec.prompt_tokens, seq.transferred_tokens, self.config.max_model_len)
        if reason is not None:
            reject(seq, reason, now)
            self.stats.rejected += 1
            return False
        seq.status = SeqStatus.WAITING
        seq.arrival_seq = self._arrivals
        self._arrivals += 1
        if self.config.record_token_times and seq.token_times_s is None:
            seq.token_times_s = []
        self.waiting.append(seq)
        self._waiting_tokens += self._pending_prefill(seq)
        self.seqs[seq.rid] = seq
        return True

    @staticmethod
    def _pending_prefill(seq: SeqState) -> int:
        return seq.spec.prompt_tokens + seq.num_generated - seq.transferred_tokens

    def abort(self, rid: int, now: float | None = None) -> SeqState | None:
        """Drop a request wherever it is and free its KV blocks (client went away)."""
        seq = self.seqs.pop(rid, None)
        if seq is None:
            return None
        if seq.status is _RUNNING:
            self.running.remove(seq)
            if self._static is not None:
                self._static.discard(seq)
        else:
            self.waiting = [s for s in self.waiting if s is not seq]
            self._waiting_tokens -= self._pending_prefill(seq)
        self.blocks.free(seq)
        seq.status = SeqStatus.ABORTED
        seq.finish_reason = FinishReason.ABORT
        seq.finish_s = now
        self.stats.aborted += 1
        return seq

    # ------------------------------------------------------------------ one iteration
    def schedule(self, now: float) -> ScheduledBatch:
        self._preempted_this_step = False
        if self._static is not None:
            self._stable_until = _INF  # nothing joins a running static batch, whatever the time
            batch, self._admission_stable = self._static.schedule(self, now)
            return batch
        cfg = self.config
        budget = cfg.max_num_batched_tokens
        chunked = cfg.chunked_prefill
        items: list[ScheduledSeq] = []
        running = self.running
        has_prefill = False
        bs = cfg.block_size
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            c = seq.num_computed_tokens
            p = seq.spec.prompt_tokens
            pending = p + seq.num_generated - c
            is_prefill = pending > 1 or c < p
            n = min(pending, budget) if (is_prefill and chunked) else pending
            if c + n > len(seq.block_ids) * bs and not self._grow(seq, c + n):
                break  # seq itself was the last one and got preempted
            items.append(ScheduledSeq(seq, n, c, is_prefill))
            has_prefill |= is_prefill
            budget -= n
            i += 1
        admitted = 0
        if self.waiting:
            admitted = self._admit(items, budget, has_prefill, now)
        stable = admitted == 0 and not self._preempted_this_step
        self._stable_until = _INF
        if stable and not self.policy.time_invariant:
            # Nothing fits now; for a time-dependent policy that holds until its order can
            # change (the head only gets harder to fit as running sequences grow).
            until = self._stable_fn(self.waiting, now) if self._stable_fn is not None else now
            stable = until > now
            self._stable_until = until
        self._admission_stable = stable
        return ScheduledBatch(items)

    def _grow(self, seq: SeqState, tokens: int) -> bool:
        """Make room for ``tokens`` KV slots of a running sequence, preempting from the tail
        of the running list (latest admitted first) when blocks run out."""
        while not self.blocks.ensure(seq, tokens):
            victim = self.running[-1]
            if seq.mispredicted:
                self.stats.misprediction_preemptions += 1
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: SeqState) -> None:
        self.running.remove(seq)
        if self._static is not None:
            self._static.discard(seq)
        self.blocks.free(seq)
        seq.num_computed_tokens = 0
        seq.transferred_tokens = 0
        seq.reserved_tokens = 0
        seq.status = SeqStatus.PREEMPTED
        seq.preemptions += 1
        self.stats.preemptions += 1
        self._preempted_this_step = True
        self.waiting.insert(0, seq)
        self._waiting_tokens += self._pending_prefill(seq)

    def _reservation(self, seq: SeqState, known: int) -> int:
        r = known
        booked = seq.booked_output_tokens  # the calibrated upper bound, else the point estimate
        if self.policy.reserve == "predicted" and booked is not None:
            out = booked
            if seq.mispredicted:
                # The prediction proved short (S3 then re-predicts a larger bucket): book twice
                # what it has generated so far, so re-admission after a preemption does not
                # run into the same wall at once.
                out = max(out, 2 * seq.num_generated)
            r = max(r, seq.spec.prompt_tokens + out)
        return min(r, self.config.max_model_len)

    def _admit(self, items: list[ScheduledSeq], budget: int, has_prefill: bool, now: float) -> int:
        """Admit waiting sequences in the policy's order while the batch cap, the token budget
        and the KV blocks allow; appends their items; returns how many were admitted."""
        cfg = self.config
        blocks = self.blocks
        running = self.running
        if len(running) >= cfg.max_num_seqs or budget <= 0:
            return 0
        if blocks.num_free - (self._watermark_blocks if running else 0) <= 0:
            return 0  # no candidate can fit; spare the policy its sort
        view = AdmissionView(
            free_blocks=blocks.num_free,
            total_blocks=blocks.num_blocks,
            block_size=blocks.block_size,
            num_running=len(running),
            max_num_seqs=cfg.max_num_seqs,
            token_budget=budget,
            running=running,
        )
        skip = self.policy.skip_blocked
        admitted = 0
        bs = blocks.block_size
        for seq in self.policy.select(self.waiting, view, now):
            if len(running) >= cfg.max_num_seqs or budget <= 0:
                break
            # The watermark protects running sequences' growth; with nothing running there is
            # nothing to protect and holding it back could starve a near-capacity request.
            room = blocks.num_free - (self._watermark_blocks if running else 0)
            if room <= 0:
                break  # not even one block: no candidate can fit
            known = seq.spec.prompt_tokens + seq.num_generated
            c, n, is_prefill, hit = self._start_of(seq, known, budget)
            # Without chunked prefill a prompt over the budget runs only alone among prefills.
            fits = not (is_prefill and not cfg.chunked_prefill and n > budget and has_prefill)
            if fits:
                # Whole prompt (plus any predicted output) is booked at admission, so a chunked
                # prefill can never stall half-way for lack of blocks.
                reserve = self._reservation(seq, known if seq.transferred_tokens == 0 else c + n)
                # Cached blocks are shared, not allocated; unused ones still come out of free room.
                shared = len(hit) - blocks.evictable_among(hit) if hit else 0
                fits = -(-reserve // bs) - len(seq.block_ids) - shared <= room
            if not fits:
                if skip:
                    continue
                break
            self._take(seq, c, n, is_prefill, hit, known, reserve, now, items)
            has_prefill |= is_prefill
            budget -= n
            admitted += 1
        if admitted:
            self.waiting = [s for s in self.waiting if s.status is not _RUNNING]
        return admitted

    def _start_of(self, seq: SeqState, known: int, budget: int) -> tuple[int, int, bool, list[int]]:
        """Where an admitted ``seq`` would start: (context it starts at, tokens this step
        computes, whether that is a prefill, the GPU prefix-cache blocks it would share)."""
        if seq.transferred_tokens:
            # P/D: the KV arrived with it; it decodes from there.
            return seq.transferred_tokens, known - seq.transferred_tokens, False, []
        blocks = self.blocks
        c = 0
        # The GPU prefix cache first (its blocks already hold the KV); on a miss, the tier
        # below (a global KV store's probe), whose hits the step must load.
        hit: list[int] = blocks.lookup(seq, known) if blocks.prefix_caching else []
        if hit:
            c = len(hit) * blocks.block_size
        elif self.prefix_probe is not None:
            c = self._probe(seq, known)
        n = min(known - c, budget) if self.config.chunked_prefill else known - c
        return c, n, True, hit

    def _take(
        self,
        seq: SeqState,
        c: int,
        n: int,
        is_prefill: bool,
        hit: list[int],
        known: int,
        reserve: int,
        now: float,
        items: list[ScheduledSeq],
    ) -> None:
        """Admit ``seq``: book its blocks (sharing ``hit``), make it RUNNING at context ``c``
        and schedule its first ``n`` tokens."""
        blocks = self.blocks
        if is_prefill and blocks.prefix_caching:
            blocks.take_cached(seq, hit, known)
        blocks.ensure(seq, reserve)
        self._waiting_tokens -= self._pending_prefill(seq)
        seq.reserved_tokens = reserve
        seq.num_computed_tokens = c
        seq.status = _RUNNING
        if seq.first_scheduled_s is None:
            seq.first_scheduled_s = now
        self.running.append(seq)
        promised = c if is_prefill and not hit else 0
        items.append(ScheduledSeq(seq, n, c, is_prefill, cached_prefix=promised))
        self.stats.cached_prefix_tokens += promised
        self.stats.admitted += 1

    def _probe(self, seq: SeqState, known: int) -> int:
        """The probe's answer as a block-aligned context below ``known`` (at least the last
        known token is computed: it yields the logits of the next one)."""
        assert self.prefix_probe is not None
        bs = self.config.block_size
        c = min(int(self.prefix_probe(seq)), known - 1)
        return max(0, c - c % bs)

    # ------------------------------------------------------------------ after the step
    def update(self, batch: ScheduledBatch, result: StepResult, now: float) -> list[SeqState]:
        """Account the step that ran; returns sequences that left the instance this step
        (finished, or handed off to a decode instance when ``role == "prefill"``)."""
        stats = self.stats
        stats.steps += 1
        stats.padding_tokens += batch.padded_tokens
        stats.prompt_padding_tokens += batch.padding.prefill_tokens
        stats.decode_padding_tokens += batch.padding.decode_seqs
        next_tokens = result.next_tokens
        out: list[SeqState] = []
        for it in batch.items:
            seq = it.seq
            if seq.status is not _RUNNING:
                continue  # aborted while the step ran
            n = it.num_new_tokens
            c = it.context_len + n
            seq.num_computed_tokens = c
            if it.is_prefill:
                if self.blocks.prefix_caching:
                    self.blocks.register(seq, c)  # its full prompt blocks now hold their KV
                stats.prefill_tokens += n
                if seq.preemptions:
                    stats.recompute_tokens += n
            else:
                stats.decode_tokens += n
            if c < seq.spec.prompt_tokens + seq.num_generated:
                continue  # a prefill chunk that did not reach the end
            seq.num_generated += 1
            if next_tokens is not None:
                tok = next_tokens.get(seq.rid)
                if tok is not None:
                    seq.output_token_ids.append(tok)
            if seq.first_token_s is None:
                seq.first_token_s = now
            if seq.token_times_s is not None:
                seq.token_times_s.append(now)
            if self.on_token is not None:
                self.on_token(seq)
            self._check_prediction(seq)
            if self._after_token(seq, now):
                out.append(seq)
        if self._static is not None:
            self._static.after_steps(batch.padding.decode_seqs, self.running)
        return out

    def _check_prediction(self, seq: SeqState) -> None:
        # Outgrowing the booked bound (upper, else the point estimate) is what forces a growth.
        p = seq.booked_output_tokens
        if p is not None and not seq.mispredicted and seq.num_generated > p:
            seq.mispredicted = True
            self.stats.mispredictions += 1

    def _after_token(self, seq: SeqState, now: float) -> bool:
        reason = self.stop(seq)
        if reason is None and seq.spec.prompt_tokens + seq.num_generated >= self.config.max_model_len:
            reason = FinishReason.MAX_MODEL_LEN
        if reason is not None:
            self._finish(seq, reason, now)
            return True
        if self.config.role == "prefill":
            self._handoff(seq)
            return True
        return False

    def _finish(self, seq: SeqState, reason: str, now: float) -> None:
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.finish_s = now
        self.running.remove(seq)
        self.seqs.pop(seq.rid, None)
        self.stats.finished += 1
        if self._static is not None:
            # Its slot stays in the batch as padding until the longest member finishes; its KV
            # is dropped now so the others can still grow.
            self._static.finished(seq)
        self.blocks.free(seq)
        if self.on_finish is not None:
            self.on_finish(seq)

    def _handoff(self, seq: SeqState) -> None:
        """Prefill instance: the sequence leaves the batch; its KV blocks stay booked here until
        the transfer to the decode instance is done (:meth:`release`)."""
        self.running.remove(seq)
        self.seqs.pop(seq.rid, None)
        seq.status = SeqStatus.HANDED_OFF
        seq.finish_reason = FinishReason.HANDOFF
        self.stats.handoffs += 1

    def release(self, seq: SeqState) -> int:
        """Free the KV blocks a handed-off sequence still holds here (its KV has been sent)."""
        return self.blocks.free(seq)

    # ------------------------------------------------------------------ introspection
    def kv_usage(self) -> float:
        return self.blocks.num_used / self.blocks.num_blocks

    @property
    def waiting_tokens(self) -> int:
        """Tokens the waiting queue still has to prefill (maintained incrementally)."""
        return self._waiting_tokens
