"""Property test: whatever arrives, aborts or preempts, the KV pool never leaks or double-books."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmplan.batch import get_policy
from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState, SeqStatus, StepResult
from llmplan.workload.types import RequestSpec

POLICIES = ["fcfs", "sjf", "s3", "static-fcfs", "slo-odbs"]

op = st.one_of(
    st.tuples(st.just("add"), st.integers(1, 40), st.integers(1, 30), st.integers(1, 40)),
    st.tuples(st.just("step")),
    st.tuples(st.just("abort"), st.integers(0, 30)),
)


def _check(s: Scheduler) -> None:
    owned = [b for seq in s.running for b in seq.block_ids]
    owned += [b for seq in s.waiting for b in seq.block_ids]
    assert len(owned) == len(set(owned)), "a block is owned twice"
    assert len(owned) == s.blocks.num_used, "blocks leaked or lost"
    for seq in s.running:
        assert len(seq.block_ids) * s.blocks.block_size >= seq.num_computed_tokens
    assert all(seq.status in (SeqStatus.WAITING, SeqStatus.PREEMPTED) for seq in s.waiting)
    pending = sum(q.spec.prompt_tokens + q.num_generated - q.transferred_tokens for q in s.waiting)
    assert s.waiting_tokens == pending


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(POLICIES),
    chunked=st.booleans(),
    blocks=st.integers(4, 24),
    ops=st.lists(op, min_size=1, max_size=60),
)
def test_block_accounting_survives_any_sequence_of_events(policy, chunked, blocks, ops):
    pol = get_policy(policy)
    cfg = SchedulerConfig(num_blocks=blocks, block_size=4, chunked_prefill=chunked and not pol.static,
                          max_num_batched_tokens=16, max_num_seqs=6)
    s = Scheduler(cfg, pol)
    seqs: list[SeqState] = []
    t = 0.0
    for o in ops:
        if o[0] == "add":
            _, prompt, out, pred = o
            seq = SeqState(spec=RequestSpec(len(seqs), t, prompt, out))
            seq.predicted_output_tokens = pred
            seqs.append(seq)
            s.add(seq, t)
        elif o[0] == "abort":
            if seqs:
                s.abort(seqs[o[1] % len(seqs)].rid, t)
        else:
            batch = s.schedule(t)
            t += 1.0
            s.update(batch, StepResult(1.0), t)
        _check(s)
    # Drain: everything admitted eventually finishes with exactly its tokens.
    for _ in range(5000):
        if not s.has_work:
            break
        batch = s.schedule(t)
        t += 1.0
        s.update(batch, StepResult(1.0), t)
        _check(s)
    assert not s.has_work
    assert s.blocks.num_used == 0
    for seq in seqs:
        assert seq.status in (SeqStatus.FINISHED, SeqStatus.ABORTED, SeqStatus.REJECTED)
        if seq.status is SeqStatus.FINISHED:
            cap = cfg.max_model_len - seq.spec.prompt_tokens
            assert seq.num_generated == min(seq.spec.output_tokens, cap)
