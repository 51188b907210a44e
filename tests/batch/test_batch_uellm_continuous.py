"""Continuous SLO-ODBS (slo-odbs-cb, slo-dbs-cb, odbs-cb): hand-worked admission order, grouping,
KV adaptation, clock hints and the starvation bound."""

from __future__ import annotations

import math

import pytest

from llmplan.batch import AdmissionView, get_policy
from llmplan.errors import LlmplanError
from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState
from llmplan.runtime.sim import LinearCost, SimConfig, simulate
from llmplan.workload.types import SLO, RequestSpec, Workload


def _seq(rid, prompt=10, pred=10, ttft=None, e2e=None, arrival=0.0, out=10):
    s = SeqState(spec=RequestSpec(rid, arrival, prompt, out, slo=SLO(ttft_s=ttft, e2e_s=e2e)))
    s.predicted_output_tokens = pred
    s.arrival_seq = rid
    return s


VIEW = AdmissionView(free_blocks=1000, total_blocks=1000, block_size=16, num_running=0, max_num_seqs=256,
                     token_budget=8192)
LOOSE = dict(threshold=100.0, max_wait_s=100.0)  # order only: every candidate joins the group


def _rids(seqs):
    return [s.rid for s in seqs]


def test_order_is_resumed_then_on_time_by_deadline_then_late():
    pol = get_policy("slo-odbs-cb", **LOOSE)
    preempted = _seq(0, ttft=50)
    preempted.num_generated = 5  # has progress: resumed first, like vLLM
    waiting = [
        preempted,
        _seq(1, ttft=10, arrival=0.0),  # TTFT deadline 10
        _seq(2, ttft=3, arrival=1.0),  # deadline 4
        _seq(3, ttft=1, arrival=0.0),  # deadline 1: already late at now = 2
        _seq(4, e2e=5, arrival=0.0),  # no TTFT target: its E2E deadline 5 counts
        _seq(5, ttft=0.5, arrival=0.5),  # deadline 1: late
    ]
    # tier 0: [0]; tier 1 by deadline: 2 (4), 4 (5), 1 (10); tier 2 (late) in arrival order: 3, 5.
    assert _rids(pol.select(waiting, VIEW, 2.0)) == [0, 2, 4, 1, 3, 5]
    # Without deferral the late ones sort by their (past) deadlines, ahead of everyone: plain EDF.
    edf = get_policy("slo-odbs-cb", defer_late=False, **LOOSE)
    assert _rids(edf.select(waiting, VIEW, 2.0)) == [0, 3, 5, 2, 4, 1]


def test_equal_deadlines_break_ties_by_predicted_length_and_odbs_ignores_deadlines():
    waiting = [_seq(0, pred=300, ttft=5), _seq(1, pred=20, ttft=5), _seq(2, pred=100, ttft=1)]
    assert _rids(get_policy("slo-odbs-cb", **LOOSE).select(waiting, VIEW, 0.0)) == [2, 1, 0]
    assert _rids(get_policy("odbs-cb", **LOOSE).select(waiting, VIEW, 0.0)) == [1, 2, 0]


def test_aging_puts_long_waiters_first_in_arrival_order():
    pol = get_policy("slo-odbs-cb", threshold=100.0, max_wait_s=5.0)
    waiting = [_seq(0, e2e=1000, arrival=0.0), _seq(1, e2e=1000, arrival=1.0), _seq(2, ttft=3, arrival=5.0)]
    # At t = 5.5 r0 waited 5.5 s >= 5: aged; r1 (4.5 s) is not; r2 has the earlier deadline (8).
    assert _rids(pol.select(waiting, VIEW, 5.5)) == [0, 2, 1]
    assert _rids(pol.select(waiting, VIEW, 6.0)) == [0, 1, 2]  # r1 aged too, behind the older r0


def test_aged_requests_get_only_a_share_of_the_running_batch():
    pol = get_policy("slo-odbs-cb", threshold=100.0, max_wait_s=5.0, aged_share=0.25)
    waiting = [_seq(0, e2e=1000, arrival=0.0), _seq(1, ttft=30, arrival=9.0)]
    running = [_seq(10 + i, arrival=0.0) for i in range(3)]
    for r in running:
        r.first_scheduled_s = 1.0  # waited 1 s: not aged
    view = AdmissionView(free_blocks=1000, total_blocks=1000, block_size=16, num_running=3, max_num_seqs=256,
                         token_budget=8192, running=running)
    # No aged request runs: the aged r0 goes first.
    assert _rids(pol.select(waiting, view, 10.0)) == [0, 1]
    # One of 3 runs aged (admitted after 6 s); quota max(1, int(0.25 * 4)) = 1 is used up: r0 keeps
    # its place by deadline (1000 > 39) behind the on-time r1.
    running[0].first_scheduled_s = 6.0
    assert _rids(pol.select(waiting, view, 10.0)) == [1, 0]


def test_group_closes_on_the_output_term():
    # Same deadlines, predictions 10, 10, 100: adding the 100 gives an idle share
    # (3*100 - 120) / 300 = 0.6 and 0.5 * 0.6 = 0.3 > 0.1 -> the group is {0, 1}.
    waiting = [_seq(i, pred=p, ttft=5) for i, p in enumerate([10, 100, 10])]
    assert _rids(get_policy("slo-odbs-cb", threshold=0.1).select(waiting, VIEW, 0.0)) == [0, 2]
    assert _rids(get_policy("slo-odbs-cb", threshold=0.3).select(waiting, VIEW, 0.0)) == [0, 2, 1]


def test_slo_dbs_cb_closes_on_deadline_spread():
    # w1 = 0, w2 = 0.5, scale 60 s: deadlines 10, 15, 20 -> 0.5 * 10/60 <= 0.5; 100 -> 0.5 * 90/60 > 0.5.
    pol = get_policy("slo-dbs-cb", threshold=0.5, slo_scale_s=60)
    waiting = [_seq(0, ttft=10), _seq(1, ttft=20), _seq(2, ttft=100), _seq(3, ttft=15)]
    assert _rids(pol.select(waiting, VIEW, 0.0)) == [0, 3, 1]


def test_group_size_adapts_to_free_kv_and_free_seq_slots():
    pol = get_policy("slo-odbs-cb", threshold=100.0)
    waiting = [_seq(i, prompt=100, pred=50, ttft=1 + i) for i in range(5)]
    # 20 free blocks x 16 = 320 tokens; each member books 100 + 50 = 150 -> 2 members.
    view = AdmissionView(free_blocks=20, total_blocks=100, block_size=16, num_running=3, max_num_seqs=64,
                         token_budget=8192)
    assert _rids(pol.select(waiting, view, 0.0)) == [0, 1]
    # 4 of 6 sequence slots taken -> 2 members even with plenty of memory.
    view = AdmissionView(free_blocks=1000, total_blocks=1000, block_size=16, num_running=4, max_num_seqs=6,
                         token_budget=8192)
    assert _rids(pol.select(waiting, view, 0.0)) == [0, 1]
    # The head is always offered, even when it alone does not fit (the scheduler then waits).
    tiny = AdmissionView(free_blocks=1, total_blocks=100, block_size=16, num_running=3, max_num_seqs=64,
                         token_budget=8192)
    assert _rids(pol.select(waiting, tiny, 0.0)) == [0]


def test_the_scheduler_admits_one_group_per_step_without_padding():
    cfg = SchedulerConfig(num_blocks=100, block_size=16, watermark=0)
    s = Scheduler(cfg, get_policy("slo-odbs-cb", threshold=0.1))
    for rid, pred in enumerate([10, 100, 10, 100]):
        s.add(_seq(rid, prompt=8 * (rid + 1), pred=pred, ttft=5), 0.0)
    b1 = s.schedule(0.0)
    assert [i.seq.rid for i in b1.items] == [0, 2]  # group {10, 10}
    assert b1.padded_tokens == 0 and [i.num_new_tokens for i in b1.items] == [8, 24]  # unpadded prompts
    assert s.blocks.num_used == 2 + 3  # prompt + predicted output booked: 18 and 34 tokens
    from llmplan.runtime.core import StepResult

    s.update(b1, StepResult(0.01), 0.01)
    b2 = s.schedule(0.01)
    # The next group {100, 100} joins the running batch while the first one decodes.
    assert [(i.seq.rid, i.is_prefill) for i in b2.items] == [(0, False), (2, False), (1, True), (3, True)]
    assert s.stats.padding_tokens == 0


def test_stable_until_is_the_next_tier_change():
    pol = get_policy("slo-odbs-cb", max_wait_s=10.0)
    waiting = [_seq(0, ttft=4, arrival=0.0), _seq(1, ttft=30, arrival=2.0), _seq(2, ttft=1, arrival=0.0)]
    # At t = 3: r2 is late (1 <= 3), r0 turns late at 4, r1 at 32; aging at 10, 12, 10 -> 4.
    assert pol.stable_until(waiting, 3.0) == 4.0
    assert pol.stable_until(waiting, 4.0) == 10.0  # r0 now late; next: r0/r2 age at 10
    assert pol.stable_until(waiting, 10.0) == 12.0  # r1 ages before its deadline 32
    assert pol.stable_until(waiting, 12.0) == math.inf
    off = get_policy("slo-odbs-cb", max_wait_s=None, defer_late=False)
    assert off.time_invariant and not pol.time_invariant


def test_names_and_bad_options():
    assert [get_policy(n).name for n in ("slo-odbs-cb", "slo-dbs-cb", "odbs-cb", "uellm-cb")] == [
        "slo-odbs-cb", "slo-dbs-cb", "odbs-cb", "slo-odbs-cb"]
    assert get_policy("slo-odbs").static and not get_policy("slo-odbs-cb").static  # old names unchanged
    with pytest.raises(LlmplanError, match="aged_share must be in"):
        get_policy("slo-odbs-cb", aged_share=0)
    with pytest.raises(LlmplanError, match="max_wait_s must be > 0"):
        get_policy("slo-odbs-cb", max_wait_s=0)
    with pytest.raises(LlmplanError, match="not both 0"):
        get_policy("slo-odbs-cb", w1=0, w2=0)


def _stream_and_a_request_without_slo(max_wait_s):
    # One instance, two sequence slots, ~0.2 s per request -> ~10 req/s served; 20 req/s offered
    # for 20 s, so the queue never empties. r0 arrives at t = 1 without an SLO: its deadline is
    # infinite, so every request with a deadline (all of the stream) sorts ahead of it.
    reqs = [RequestSpec(0, 1.0, 10, 20, slo=SLO())]
    reqs += [RequestSpec(i, 0.05 * (i - 1), 10, 20, slo=SLO(ttft_s=1000.0)) for i in range(1, 401)]
    reqs.sort(key=lambda r: r.arrival_s)
    cfg = SimConfig(instances=1, policy="slo-odbs-cb", policy_kwargs={"max_wait_s": max_wait_s},
                    cost=LinearCost(), num_blocks=200, max_num_seqs=2, predictor="oracle")
    res = simulate(Workload("stream", reqs), cfg)
    assert all(r.status == "ok" for r in res.records)
    return next(r for r in res.records if r.rid == 0)


def test_aging_bounds_the_wait_of_a_request_that_always_sorts_last():
    starved = _stream_and_a_request_without_slo(None)
    aged = _stream_and_a_request_without_slo(3.0)
    # Unbounded: r0 runs only when the 400-request stream has drained (~40 s of service).
    assert starved.first_scheduled_s - starved.arrival_s > 30
    # Aged at t = 4; ahead of it in tier 0 only requests older than it that are still waiting
    # (the 20 that arrived before t = 1 were served by t ~ 2), so it runs at the next free slot.
    assert 3.0 <= aged.first_scheduled_s - aged.arrival_s < 3.0 + 0.5
