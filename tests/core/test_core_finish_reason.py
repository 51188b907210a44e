"""Finish reasons are FinishReason members that serialise as the plain words."""

from __future__ import annotations

import json

from llmplan.runtime.core import FinishReason, Scheduler, SchedulerConfig, SeqState, StepResult
from llmplan.workload.types import RequestSpec


def _run(role: str, output_tokens: int, max_model_len: int | None = None) -> SeqState:
    sched = Scheduler(SchedulerConfig(num_blocks=64, role=role, max_model_len=max_model_len))
    seq = SeqState(RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=8, output_tokens=output_tokens))
    assert sched.add(seq, 0.0)
    now = 0.0
    while seq.finish_reason is None:
        batch = sched.schedule(now)
        now += 0.01
        sched.update(batch, StepResult(0.01), now)
    return seq


def test_members_and_wire_form():
    assert _run("both", 3).finish_reason is FinishReason.LENGTH
    assert _run("both", 50, max_model_len=12).finish_reason is FinishReason.MAX_MODEL_LEN
    assert _run("prefill", 3).finish_reason is FinishReason.HANDOFF
    assert json.dumps({"r": FinishReason.LENGTH}) == '{"r": "length"}'
    assert f"{FinishReason.ABORT}" == "abort" and FinishReason.EOS == "eos"
