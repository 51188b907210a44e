"""BatchPolicy.stable_until: declared on the protocol; its default promises nothing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.runtime.core import AdmissionView, BatchPolicy, Scheduler, SchedulerConfig, SeqState
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class _Holds(BatchPolicy):
    """Reads the clock (not time-invariant) and admits nothing before ``opens_at``."""

    opens_at: float = 10.0
    name: str = "holds"
    static: bool = False
    reserve: str = "none"
    uses_prediction: bool = False
    skip_blocked: bool = False
    time_invariant: bool = False

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        return waiting if now >= self.opens_at else []


@dataclass(slots=True)
class _HoldsAndSays(_Holds):
    def stable_until(self, waiting: Sequence[SeqState], now: float) -> float:
        return self.opens_at


def _stable_until(policy: BatchPolicy, now: float) -> float:
    sched = Scheduler(SchedulerConfig(num_blocks=64), policy)
    sched.add(SeqState(RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=8, output_tokens=2)), now)
    sched.schedule(now)
    return sched.admission_stable_until


def test_default_promises_nothing_and_an_override_is_used():
    assert _stable_until(_Holds(), 3.0) == 3.0  # the default: may change at any time
    assert _stable_until(_HoldsAndSays(), 3.0) == 10.0
    assert not hasattr(_Holds(), "__dict__")  # subclassing the protocol keeps policies slotted


@dataclass(slots=True)
class _InvariantHolds(_HoldsAndSays):
    time_invariant: bool = True


def test_time_invariant_policies_are_not_asked():
    # Held at 3.0 but declared time-invariant: its stable_until (10.0) is not consulted.
    assert _stable_until(_InvariantHolds(), 3.0) == math.inf
