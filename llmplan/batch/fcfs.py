"""First-come-first-served policies: vLLM-like continuous batching and classic static batching."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.batch.base import AdmissionView, BatchPolicy, Reserve

# ContinuousFCFS is the scheduler's default policy, so it lives beside the protocol in the core
# (the core must not import its own plug-ins); re-exported here with the other FCFS policy.
from llmplan.runtime.core.policy import ContinuousFCFS as ContinuousFCFS
from llmplan.runtime.core.types import SeqState


@dataclass(slots=True)
class StaticFCFS(BatchPolicy):
    """Static batching in arrival order (HF ``generate`` style): take up to ``max_batch_size``
    of the oldest requests; the batch runs until its longest request finishes."""

    max_batch_size: int = 32
    name: str = "static-fcfs"
    static: bool = True
    reserve: Reserve = "none"
    uses_prediction: bool = False
    skip_blocked: bool = False
    time_invariant: bool = True

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {self.max_batch_size})")

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        return waiting[: self.max_batch_size]
