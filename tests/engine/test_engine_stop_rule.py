"""The engine's stop rule is a pure check; its side effect (stop-string detokenization) runs
only through the scheduler's on_token hook, once per emitted token."""

from __future__ import annotations

from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState, StepResult
from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.engine.llm_engine import EngineStopRule
from llmplan.runtime.engine.request_state import RequestState
from llmplan.runtime.engine.sampling import RequestSampler
from llmplan.workload.types import RequestSpec

STOP_TOKEN = 5  # the token whose text completes the stop string


class _Detok:
    """A detokenizer over a tiny vocabulary: token t is the text "<t>"; "<5>" is the stop string."""

    def __init__(self) -> None:
        self.calls = 0
        self.seen = 0

    def update(self, ids: list[int], final: bool) -> tuple[str, bool]:
        self.calls += 1
        new = ids[self.seen :]
        self.seen = len(ids)
        return "".join(f"<{t}>" for t in new), STOP_TOKEN in new


def _seq(max_tokens: int = 8) -> tuple[SeqState[RequestState], _Detok]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=["<5>"])
    detok = _Detok()
    st = RequestState(
        request=GenerateRequest("r0", [1, 2, 3], params),
        sink=lambda out: None,
        sampler=RequestSampler(params, 0),
        detok=detok,  # type: ignore[arg-type]
        eos_ids=frozenset({0}),
    )
    spec = RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=3, output_tokens=max_tokens)
    return SeqState[RequestState](spec=spec, prompt_token_ids=[1, 2, 3], payload=st), detok


def test_the_check_changes_nothing_and_observe_finds_the_stop_string():
    rule = EngineStopRule()
    seq, detok = _seq()
    seq.output_token_ids.append(STOP_TOKEN)
    seq.num_generated = 1
    assert rule(seq) is None and rule(seq) is None  # not observed yet: no stop, nothing advanced
    assert detok.calls == 0 and seq.payload.pending_text == ""
    rule.observe(seq)
    assert detok.calls == 1 and seq.payload.pending_text == "<5>"
    assert rule(seq) == "stop" and rule(seq) == "stop" and detok.calls == 1


def test_the_scheduler_observes_each_token_once_before_the_check():
    rule = EngineStopRule()
    sched = Scheduler(SchedulerConfig(num_blocks=8, block_size=4), stop=rule)
    sched.on_token = rule.observe
    seq, detok = _seq()
    assert sched.add(seq, 0.0)
    tokens = [7, 8, STOP_TOKEN, 9]
    done: list[SeqState] = []
    for step, tok in enumerate(tokens):
        batch = sched.schedule(float(step))
        done = sched.update(batch, StepResult(0.01, {seq.rid: tok}), float(step) + 0.01)
        if done:
            break
    assert done == [seq] and seq.finish_reason == "stop"
    assert seq.output_token_ids == [7, 8, STOP_TOKEN]
    assert detok.calls == 3 and seq.payload.pending_text == "<7><8><5>"
