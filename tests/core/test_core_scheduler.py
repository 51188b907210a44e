"""The serving core's scheduler, stepped by hand with a trivial executor."""

from __future__ import annotations

import pytest

from llmplan.batch import get_policy
from llmplan.runtime.core import (
    Scheduler,
    SchedulerConfig,
    SeqState,
    SeqStatus,
    StepResult,
)
from llmplan.workload.types import RequestSpec


def _seq(rid: int, prompt: int, out: int, arrival: float = 0.0, pred: int | None = None) -> SeqState:
    s = SeqState(spec=RequestSpec(rid, arrival, prompt, out))
    s.predicted_output_tokens = pred
    return s


def _run(sched: Scheduler, max_steps: int = 10_000, tokens=None):
    """Step until idle; returns per-step [(rid, n, ctx, prefill)] and finish order."""
    trace, finished, t = [], [], 0.0
    while sched.has_work and len(trace) < max_steps:
        batch = sched.schedule(t)
        trace.append([(i.seq.rid, i.num_new_tokens, i.context_len, i.is_prefill) for i in batch.items])
        t += 1.0
        nt = tokens(batch) if tokens else None
        done = sched.update(batch, StepResult(1.0, nt), t)
        finished += [(s.rid, s.num_generated, s.finish_reason) for s in done]
    return trace, finished


def test_continuous_batching_token_accounting():
    s = Scheduler(SchedulerConfig(num_blocks=10, block_size=4, watermark=0), get_policy("fcfs"))
    for rid, p, o in [(0, 5, 3), (1, 6, 10), (2, 3, 2)]:
        assert s.add(_seq(rid, p, o), 0.0)
    trace, fin = _run(s)
    # Step 1 prefills all three prompts and samples their first tokens.
    assert trace[0] == [(0, 5, 0, True), (1, 6, 0, True), (2, 3, 0, True)]
    assert trace[1] == [(0, 1, 5, False), (1, 1, 6, False), (2, 1, 3, False)]
    # r2 needs 2 tokens: prefill + 1 decode; r0 3; r1 10 -> 10 steps in total.
    assert fin == [(2, 2, "length"), (0, 3, "length"), (1, 10, "length")]
    assert len(trace) == 10
    assert s.stats.prefill_tokens == 14 and s.stats.decode_tokens == 1 + 2 + 9
    assert s.blocks.num_free == 10


def test_preemption_recomputes_prompt_and_generated_tokens():
    # 4 blocks of 4 slots = 16 tokens; two 6-token prompts that each want 6 more tokens.
    s = Scheduler(SchedulerConfig(num_blocks=4, block_size=4, watermark=0), get_policy("fcfs"))
    a, b = _seq(0, 6, 6), _seq(1, 6, 6)
    s.add(a, 0.0)
    s.add(b, 0.0)
    trace, fin = _run(s)
    assert s.stats.preemptions >= 1
    assert b.preemptions >= 1 and a.preemptions == 0  # the later-admitted one is the victim
    # The victim's re-prefill covers prompt + the tokens it had generated.
    recompute = [it for step in trace for it in step if it[0] == 1 and it[3] and it[2] == 0][1]
    assert recompute[1] > 6
    assert {r: n for r, n, _ in fin} == {0: 6, 1: 6}
    assert s.blocks.num_free == 4
    assert s.stats.recompute_tokens == recompute[1]


def test_chunked_prefill_splits_by_token_budget_and_emits_first_token_on_last_chunk():
    cfg = SchedulerConfig(num_blocks=64, block_size=4, chunked_prefill=True, max_num_batched_tokens=4)
    s = Scheduler(cfg, get_policy("fcfs"))
    s.add(_seq(0, 10, 2), 0.0)
    trace, fin = _run(s)
    assert trace[:3] == [[(0, 4, 0, True)], [(0, 4, 4, True)], [(0, 2, 8, True)]]
    assert trace[3] == [(0, 1, 10, False)]
    assert fin == [(0, 2, "length")]


def test_decodes_come_first_and_new_prefill_is_chunked_into_the_leftover_budget():
    cfg = SchedulerConfig(num_blocks=64, block_size=4, chunked_prefill=True, max_num_batched_tokens=6)
    s = Scheduler(cfg, get_policy("fcfs"))
    s.add(_seq(0, 4, 5), 0.0)
    b0 = s.schedule(0.0)
    s.update(b0, StepResult(1.0), 1.0)
    s.add(_seq(1, 10, 2), 1.0)
    b1 = s.schedule(1.0)
    assert [(i.seq.rid, i.num_new_tokens, i.is_prefill) for i in b1.items] == [(0, 1, False), (1, 5, True)]


def test_abort_frees_blocks_wherever_the_request_is():
    s = Scheduler(SchedulerConfig(num_blocks=8, block_size=4, watermark=0), get_policy("fcfs"))
    a, b = _seq(0, 12, 50), _seq(1, 30, 5)
    s.add(a, 0.0)
    s.add(b, 0.0)
    batch = s.schedule(0.0)  # a fits (3 blocks), b (8 blocks) waits
    assert [i.seq.rid for i in batch.items] == [0]
    s.update(batch, StepResult(1.0), 1.0)
    assert s.abort(0).status is SeqStatus.ABORTED
    assert s.blocks.num_free == 8
    assert s.abort(1).finish_reason == "abort"
    assert not s.has_work and s.stats.aborted == 2
    assert s.abort(99) is None


def test_prompt_beyond_kv_capacity_is_rejected_with_reason():
    s = Scheduler(SchedulerConfig(num_blocks=2, block_size=4), get_policy("fcfs"))
    seq = _seq(0, 8, 1)  # 8 prompt tokens + 1 slot > 8
    assert not s.add(seq, 0.0)
    assert seq.status is SeqStatus.REJECTED and "8-token KV capacity" in seq.finish_reason
    assert s.stats.rejected == 1 and not s.has_work


def test_max_model_len_stops_a_sequence_alone_in_the_cache():
    s = Scheduler(SchedulerConfig(num_blocks=2, block_size=4), get_policy("fcfs"))
    seq = _seq(0, 4, 100)
    s.add(seq, 0.0)
    _, fin = _run(s)
    assert fin == [(0, 4, "max_model_len")]  # 4 prompt + 4 generated = 8 slots


class EosStop:
    """An engine-style stop rule: EOS token or max_tokens (= spec.output_tokens)."""

    eos = 7

    def __call__(self, seq):
        if seq.output_token_ids and seq.output_token_ids[-1] == self.eos:
            return "eos"
        return "length" if seq.num_generated >= seq.spec.output_tokens else None

    def steps_left(self, seq):
        return None


def test_engine_stop_rule_with_sampled_tokens_and_no_fast_forward():
    s = Scheduler(SchedulerConfig(num_blocks=16, block_size=4), get_policy("fcfs"), stop=EosStop())
    a, b = _seq(0, 3, 50), _seq(1, 3, 4)
    s.add(a, 0.0)
    s.add(b, 0.0)
    counter = {"n": 0}

    def tokens(batch):
        counter["n"] += 1
        # r0 samples EOS on its 3rd token; r1 never does.
        return {i.seq.rid: (7 if (i.seq.rid == 0 and counter["n"] == 3) else 1) for i in batch.items}

    b0 = s.schedule(0.0)
    s.update(b0, StepResult(1.0, tokens(b0)), 1.0)
    b1 = s.schedule(1.0)
    assert s.decode_run_limit(b1, 100) == 1  # stop rule cannot look ahead
    s.update(b1, StepResult(1.0, tokens(b1)), 2.0)
    b2 = s.schedule(2.0)
    done = s.update(b2, StepResult(1.0, tokens(b2)), 3.0)
    assert [(d.rid, d.finish_reason, d.output_token_ids) for d in done] == [(0, "eos", [1, 1, 7])]
    assert a.block_ids == [] and s.blocks.num_used == len(b.block_ids) == 2  # r0's blocks are back


def test_prefill_role_hands_off_after_first_token():
    s = Scheduler(SchedulerConfig(num_blocks=16, block_size=4, role="prefill"), get_policy("fcfs"))
    a, b = _seq(0, 5, 10), _seq(1, 5, 1)
    s.add(a, 0.0)
    s.add(b, 0.0)
    batch = s.schedule(0.0)
    done = s.update(batch, StepResult(1.0), 1.0)
    assert {(d.rid, d.finish_reason) for d in done} == {(0, "handoff"), (1, "length")}
    assert not s.has_work
    assert s.blocks.num_used == 2  # r0's KV stays booked until its transfer is done
    s.release(a)
    assert s.blocks.num_free == 16


def test_decode_role_admits_transferred_kv_without_prefill():
    s = Scheduler(SchedulerConfig(num_blocks=16, block_size=4, role="decode"), get_policy("fcfs"))
    seq = _seq(0, 9, 3)
    seq.num_generated = 1
    seq.num_computed_tokens = 9
    seq.transferred_tokens = 9
    s.add(seq, 0.0)
    batch = s.schedule(0.0)
    assert [(i.num_new_tokens, i.context_len, i.is_prefill) for i in batch.items] == [(1, 9, False)]
    assert len(seq.block_ids) == 3  # 10 slots


def test_underestimated_length_grows_the_reservation_and_is_counted():
    s = Scheduler(SchedulerConfig(num_blocks=32, block_size=4, watermark=0), get_policy("s3"))
    seq = _seq(0, 4, 12, pred=4)  # books 4 + 4 = 8 slots; really needs 4 + 12
    s.add(seq, 0.0)
    b0 = s.schedule(0.0)
    assert seq.reserved_tokens == 8 and len(seq.block_ids) == 2
    s.update(b0, StepResult(1.0), 1.0)
    _, fin = _run(s)
    assert fin == [(0, 12, "length")]
    assert s.stats.mispredictions == 1


def test_misprediction_forces_preemption_when_memory_is_booked_out():
    # a books 4 + 4 = 8 slots (2 blocks) but needs 13; b books 4 + 8 = 12 (3 blocks); pool = 5.
    # When a needs its 3rd block (slot 9, step 6) b is still running: b is preempted.
    s = Scheduler(SchedulerConfig(num_blocks=5, block_size=4, watermark=0), get_policy("s3"))
    a, b = _seq(0, 4, 9, pred=4), _seq(1, 4, 8, pred=8)
    s.add(a, 0.0)
    s.add(b, 0.0)
    _, fin = _run(s)
    assert {r: n for r, n, _ in fin} == {0: 9, 1: 8}
    assert s.stats.mispredictions == 1
    assert b.preemptions == 1 and a.preemptions == 0
    assert s.stats.preemptions == 1 and s.stats.misprediction_preemptions == 1


def test_static_batching_counts_prompt_and_decode_padding():
    s = Scheduler(SchedulerConfig(num_blocks=64, block_size=4), get_policy("static-fcfs", max_batch_size=4))
    for rid, p, o in [(0, 8, 2), (1, 4, 5)]:
        s.add(_seq(rid, p, o), 0.0)
    s.add(_seq(2, 4, 1), 0.5)
    b0 = s.schedule(0.0)  # batch {0, 1, 2}: prompts 8, 4, 4 -> 8 prompt-padding tokens
    assert b0.padded_tokens == 8 and len(b0.items) == 3
    s.update(b0, StepResult(1.0), 1.0)  # r2 finishes (1 token) but keeps its slot
    s.add(_seq(3, 4, 1), 1.0)  # must wait for the batch to drain
    trace, _ = _run(s)
    assert all(3 not in [r for r, *_ in step] for step in trace[:4])
    # Decode padding: r2 idles 4 steps, r0 idles 3 steps (longest = r1 with 5 tokens).
    # Then r3 runs alone: no padding.
    assert s.stats.padding_tokens == 8 + 4 + 3
    assert s.blocks.num_free == 64


def test_static_policy_with_chunked_prefill_is_refused():
    with pytest.raises(ValueError, match="static batching"):
        Scheduler(SchedulerConfig(num_blocks=8, chunked_prefill=True), get_policy("static-fcfs"))
