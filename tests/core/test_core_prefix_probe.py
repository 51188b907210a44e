"""The scheduler's optional prefix probe: a cached prompt prefix is neither scheduled nor
budgeted (vLLM's num_computed_tokens at admission); without a probe nothing changes."""

from __future__ import annotations

from llmplan.runtime.core.scheduler import Scheduler, SchedulerConfig
from llmplan.runtime.core.types import SeqState, StepResult
from llmplan.workload.types import RequestSpec

BS = 16


def _sched(probe=None, budget: int = 64) -> Scheduler:
    cfg = SchedulerConfig(num_blocks=64, block_size=BS, max_num_batched_tokens=budget, chunked_prefill=True)
    return Scheduler(cfg, prefix_probe=probe)


def _seq(rid: int, prompt: int, out: int = 2) -> SeqState:
    return SeqState(RequestSpec(rid=rid, arrival_s=0.0, prompt_tokens=prompt, output_tokens=out))


def _run(s: Scheduler, seqs: list[SeqState]) -> list[list[tuple[int, int, int, int]]]:
    """Drive the scheduler to completion; per step (rid, context, new tokens, promised)."""
    for q in seqs:
        assert s.add(q, 0.0)
    steps = []
    t = 0.0
    while s.has_work:
        batch = s.schedule(t)
        steps.append([(it.seq.rid, it.context_len, it.num_new_tokens, it.cached_prefix)
                      for it in batch.items])
        t += 1.0
        s.update(batch, StepResult(duration_s=1.0), t)
        assert len(steps) < 100
    return steps


def test_without_a_probe_a_long_prompt_is_chunked_against_the_budget_from_token_zero():
    steps = _run(_sched(), [_seq(0, 130)])
    assert [s[0][1:3] for s in steps[:3]] == [(0, 64), (64, 64), (128, 2)]
    assert all(it[3] == 0 for s in steps for it in s)
    assert _sched().stats.cached_prefix_tokens == 0


def test_a_probed_prefix_is_skipped_and_only_the_rest_is_budgeted():
    s = _sched(lambda seq: 112)  # 7 blocks of a 130-token prompt are cached
    steps = _run(s, [_seq(0, 130)])
    # The whole uncached tail (18 tokens) fits one step: the prompt prefills at once.
    assert steps[0] == [(0, 112, 18, 112)]
    assert s.stats.prefill_tokens == 18
    assert s.stats.cached_prefix_tokens == 112
    assert len(steps) == 2  # prefill + one decode (2 output tokens)


def test_the_budget_left_by_a_cached_prompt_admits_the_next_request_in_the_same_step():
    hits = {0: 96, 1: 0}
    s = _sched(lambda seq: hits[seq.rid])
    steps = _run(s, [_seq(0, 100), _seq(1, 40)])
    # 4 tokens of request 0 plus 40 of request 1: one step, where without the probe request 0
    # alone would take the whole 64-token budget.
    assert steps[0] == [(0, 96, 4, 96), (1, 0, 40, 0)]
    assert _run(_sched(), [_seq(0, 100), _seq(1, 40)])[0] == [(0, 0, 64, 0)]


def test_the_probe_answer_is_rounded_to_a_block_and_leaves_the_last_token_to_compute():
    s = _sched(lambda seq: 1000)
    steps = _run(s, [_seq(0, 64), _seq(1, 50)])
    # 64 tokens: at most 63 cached, rounded down to 48; 50 tokens: 49 -> 48.
    assert steps[0] == [(0, 48, 16, 48), (1, 48, 2, 48)]
    s2 = _sched(lambda seq: 37)
    assert _run(s2, [_seq(0, 64)])[0] == [(0, 32, 32, 32)]
    s3 = _sched(lambda seq: -5)
    assert _run(s3, [_seq(0, 20)])[0] == [(0, 0, 20, 0)]


def test_the_probe_is_asked_at_admission_only_and_blocks_cover_the_whole_prompt():
    calls: list[int] = []

    def probe(seq: SeqState) -> int:
        calls.append(seq.rid)
        return 32

    s = _sched(probe, budget=64)
    q = _seq(0, 200, out=3)
    s.add(q, 0.0)
    batch = s.schedule(0.0)
    assert [(it.context_len, it.num_new_tokens) for it in batch.items] == [(32, 64)]
    assert len(q.block_ids) * BS >= 200  # [0, 32) has blocks for the executor to fill
    s.update(batch, StepResult(duration_s=1.0), 1.0)
    while s.has_work:
        b = s.schedule(0.0)
        assert all(it.cached_prefix == 0 for it in b.items)  # only the admitting step carries it
        s.update(b, StepResult(duration_s=1.0), 1.0)
    assert calls == [0]
    assert s.stats.prefill_tokens == 200 - 32


def test_a_transferred_sequence_is_not_probed():
    calls: list[int] = []
    cfg = SchedulerConfig(num_blocks=64, block_size=BS, max_num_batched_tokens=64, chunked_prefill=True,
                          role="decode")
    s = Scheduler(cfg, prefix_probe=lambda seq: calls.append(seq.rid) or 48)
    q = _seq(0, 70)
    q.transferred_tokens = 70
    q.num_generated = 1
    s.add(q, 0.0)
    b = s.schedule(0.0)
    assert [(it.context_len, it.num_new_tokens, it.cached_prefix) for it in b.items] == [(70, 1, 0)]
    assert calls == []
