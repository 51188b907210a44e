"""S3 (Jin et al., 2023): book KV for the *predicted* output length instead of the model's
maximum, and pack as many sequences into memory as fit.

Per step the policy looks at a window of the oldest waiting requests and offers them
shortest-predicted first (by the predictor's rank score); the scheduler admits first-fit
(``skip_blocked``), booking ``prompt + upper`` tokens for each (the calibrated upper bound of the
output, the point estimate where the predictor gives none). The window bounds starvation: a request leaves it
only by being admitted, so a long request at the window's head is admitted once the short
ones ahead of it are gone. A sequence that outgrows its booking grows on demand and, when
blocks run out, is preempted and recomputed (S3's misprediction handling); the scheduler
counts both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.batch.base import AdmissionView, BatchPolicy, Reserve, rank_key
from llmplan.runtime.core.types import SeqState


@dataclass(slots=True)
class S3(BatchPolicy):
    window: int = 64
    name: str = "s3"
    static: bool = False
    reserve: Reserve = "predicted"
    uses_prediction: bool = True
    skip_blocked: bool = True
    time_invariant: bool = True

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"S3 window must be >= 1 (got {self.window})")

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        head = waiting[: self.window]
        return sorted(head, key=lambda s: (rank_key(s), s.arrival_seq))
