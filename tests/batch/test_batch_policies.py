"""Batch policies on hand-made cases whose batches and padding can be worked out by hand."""

from __future__ import annotations

import pytest

from llmplan.batch import POLICIES, AdmissionView, get_policy
from llmplan.errors import LlmplanError
from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState
from llmplan.runtime.sim import LinearCost, SimConfig, simulate
from llmplan.workload.types import SLO, RequestSpec, Workload


def _seq(rid, prompt=10, pred=None, e2e=None, arrival=0.0, out=10):
    s = SeqState(spec=RequestSpec(rid, arrival, prompt, out, slo=SLO(e2e_s=e2e)))
    s.predicted_output_tokens = pred
    s.arrival_seq = rid
    return s


VIEW = AdmissionView(free_blocks=1000, total_blocks=1000, block_size=16, num_running=0, max_num_seqs=256,
                     token_budget=8192)


def _sim(policy: str, outputs, prompts=None, **kw):
    prompts = prompts or [10] * len(outputs)
    pairs = enumerate(zip(prompts, outputs, strict=True))
    wl = Workload("hand", [RequestSpec(i, 0.0, p, o) for i, (p, o) in pairs])
    cfg = SimConfig(instances=1, policy=policy, policy_kwargs=kw, cost=LinearCost(), num_blocks=1000,
                    predictor="oracle")
    return simulate(wl, cfg)


def test_fifo_static_batching_pads_short_requests_to_the_longest():
    # Batches of 2 in arrival order: {10, 100} and {10, 100} -> each short one idles 90 steps.
    res = _sim("static-fcfs", [10, 100, 10, 100], max_batch_size=2)
    assert res.counters["padding_tokens"] == res.counters["decode_padding_tokens"] == 2 * 90
    assert res.counters["steps"] == 2 * 100  # each batch runs until its longest request finishes
    assert [(r.status, r.output_tokens) for r in res.records] == [("ok", o) for o in (10, 100, 10, 100)]


def test_output_length_aware_grouping_removes_the_padding():
    # ODBS sorts by predicted length: {10, 10} then {100, 100}: no padding, 10 + 100 steps.
    res = _sim("odbs", [10, 100, 10, 100], max_batch_size=2)
    assert res.counters["padding_tokens"] == 0
    assert res.counters["steps"] == 10 + 100
    fifo = _sim("static-fcfs", [10, 100, 10, 100], max_batch_size=2)
    e2e = lambda r: sum(x.finish_s - x.arrival_s for x in r.records)  # noqa: E731
    assert e2e(res) < e2e(fifo)


def test_prompt_padding_in_a_static_batch():
    # One batch of prompts 8, 16, 16, 32: padding to 32 = 24 + 16 + 16 = 56 tokens; equal outputs.
    res = _sim("static-fcfs", [5, 5, 5, 5], prompts=[8, 16, 16, 32], max_batch_size=4)
    assert res.counters["padding_tokens"] == res.counters["prompt_padding_tokens"] == 56
    assert res.counters["decode_padding_tokens"] == 0


def test_odbs_threshold_splits_mixed_lengths_even_when_the_batch_size_allows_them():
    # Sorted [10, 10, 100, 100]; adding the first 100 makes the padding share
    # (3*100 - 120) / 300 = 0.6 and w1 * 0.6 = 0.3 > threshold 0.1 -> the batch closes at {10, 10}.
    res = _sim("odbs", [10, 100, 10, 100], max_batch_size=4, threshold=0.1)
    assert res.counters["padding_tokens"] == 0 and res.counters["steps"] == 110
    # With a loose threshold all four share a batch: 2 * 90 padding, 100 steps.
    loose = _sim("odbs", [10, 100, 10, 100], max_batch_size=4, threshold=1.0)
    assert loose.counters["padding_tokens"] == 180 and loose.counters["steps"] == 100


def test_slo_dbs_sorts_by_deadline_and_closes_on_deadline_spread():
    pol = get_policy("slo-dbs", threshold=0.5, slo_scale_s=60)  # w1 = 0, w2 = 0.5
    waiting = [_seq(0, e2e=10), _seq(1, e2e=20), _seq(2, e2e=100), _seq(3, e2e=15)]
    # Deadlines 10, 15, 20 are within 0.5 * spread/60 <= 0.5; 100 would give 0.5 * 90/60 = 0.75.
    assert [s.rid for s in pol.select(waiting, VIEW, 0.0)] == [0, 3, 1]


def test_slo_odbs_adapts_batch_size_to_the_current_longest_request():
    pol = get_policy("slo-odbs", threshold=10.0)
    view = AdmissionView(free_blocks=10, total_blocks=10, block_size=100, num_running=0, max_num_seqs=64,
                         token_budget=8192)  # 1000 KV tokens
    waiting = [_seq(i, prompt=100, pred=p, e2e=50 + i) for i, p in enumerate([100, 100, 400, 100])]
    # 100+100 tokens each: up to 5 fit; adding the 400-token one makes each padded sequence
    # 100 + 400 tokens, so only 2 fit and the batch closes before it.
    assert [s.rid for s in pol.select(waiting, view, 0.0)] == [0, 1]


def test_sjf_and_ljf_order_by_predicted_length_with_arrival_tie_break():
    waiting = [_seq(0, pred=50), _seq(1, pred=5), _seq(2, pred=50), _seq(3, pred=500)]
    assert [s.rid for s in get_policy("sjf").select(waiting, VIEW, 0.0)] == [1, 0, 2, 3]
    assert [s.rid for s in get_policy("ljf").select(waiting, VIEW, 0.0)] == [3, 0, 2, 1]


def test_s3_books_predicted_length_and_packs_what_fits():
    # 10 blocks x 4 slots. r0 wants 4 + 30 = 34 slots (9 blocks), r1/r2 4 + 4 (2 blocks each).
    s = Scheduler(SchedulerConfig(num_blocks=10, block_size=4, watermark=0), get_policy("s3"))
    for rid, pred in [(0, 30), (1, 4), (2, 4)]:
        seq = _seq(rid, prompt=4, pred=pred)
        s.add(seq, 0.0)
    batch = s.schedule(0.0)
    assert [i.seq.rid for i in batch.items] == [1, 2]  # r0 does not fit beside them; skipped, not blocking
    assert s.blocks.num_used == 4
    # FCFS books only the prompt and admits all three in arrival order.
    f = Scheduler(SchedulerConfig(num_blocks=10, block_size=4, watermark=0), get_policy("fcfs"))
    for rid in range(3):
        f.add(_seq(rid, prompt=4), 0.0)
    assert [i.seq.rid for i in f.schedule(0.0).items] == [0, 1, 2]


def test_fcfs_is_head_of_line():
    # The oldest request does not fit: nothing behind it may overtake it.
    s = Scheduler(SchedulerConfig(num_blocks=4, block_size=4, watermark=0), get_policy("fcfs"))
    s.add(_seq(0, prompt=8, out=50), 0.0)
    s.schedule(0.0)
    s.add(_seq(1, prompt=12), 0.0)  # needs 3 blocks, 2 free
    s.add(_seq(2, prompt=2), 0.0)  # would fit
    assert [i.seq.rid for i in s.schedule(1.0).items] == [0]


def test_registry_builds_every_policy_and_rejects_unknown_names():
    for name in POLICIES:
        assert get_policy(name).name == name
    assert get_policy("vllm").name == "fcfs"
    with pytest.raises(LlmplanError, match="unknown batch policy 'nope'"):
        get_policy("nope")
    with pytest.raises(LlmplanError, match="bad options"):
        get_policy("slo-odbs", w1=0, w2=0)
    with pytest.raises(LlmplanError, match="bad options"):
        get_policy("fcfs", bogus=1)


def test_policies_that_need_lengths_refuse_to_run_without_a_predictor():
    wl = Workload("w", [RequestSpec(0, 0.0, 10, 10)])
    with pytest.raises(LlmplanError, match="predicted length"):
        simulate(wl, SimConfig(instances=1, policy="sjf", predictor=None, cost=LinearCost(), num_blocks=100))
