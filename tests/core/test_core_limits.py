"""The rejection rules in one place (runtime.core.limits): what the simulator refuses on
arrival, what an instance refuses in Scheduler.add."""

from __future__ import annotations

from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState, SeqStatus
from llmplan.runtime.core.limits import context_rejection, http_reason, kv_rejection, placement
from llmplan.workload.types import RequestSpec


def test_placement_keeps_the_instances_whose_context_holds_the_request():
    # Colocated: 100 + 50 fits a 200-token context, not a 120-token one.
    assert placement(100, 50, [(120, False), (200, False)]) == ([1], None)
    # P/D: the prefill instance computes the prompt and one token only; a decode instance
    # must hold the whole sequence.
    assert placement(100, 50, [(120, True)], [200]) == ([0], None)


def test_placement_refuses_with_the_servers_words():
    fits, reason = placement(100, 150, [(200, False)])
    assert fits == [] and reason == http_reason(400, context_rejection(100, 150, 200).message)
    fits, reason = placement(100, 0, [(200, False)])
    assert fits == [] and reason == "request asks for 0 output tokens; a request generates at least one"
    # The prefill would fit, and so would the largest context (200), but no decode instance
    # holds prompt + output.
    fits, reason = placement(100, 50, [(200, True)], [120])
    assert fits == [] and reason is not None and "no decode instance holds 100 + 50 tokens" in reason
    # No instance at all holds it: the server's context message, for the largest context.
    fits, reason = placement(100, 50, [(101, True)], [120])
    assert fits == [] and reason == http_reason(400, context_rejection(100, 50, 120).message)


def test_scheduler_add_applies_kv_rejection():
    sched = Scheduler(SchedulerConfig(num_blocks=2, block_size=4))  # 8 KV slots
    seq = SeqState(RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=8, output_tokens=1))
    assert not sched.add(seq, 1.0)
    assert seq.status is SeqStatus.REJECTED and seq.finish_s == 1.0
    assert seq.finish_reason == kv_rejection(8, 0, 8) and sched.stats.rejected == 1
    assert kv_rejection(7, 0, 8) is None and kv_rejection(0, 0, 8) is not None
