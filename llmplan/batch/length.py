"""Length-aware priority: shortest / longest predicted job first, iteration-level batching.

Both order by ``SeqState.predicted_rank`` (the predictor's rank score; its point estimate
``predicted_output_tokens`` where it gives none), never the request's true length, so a wrong
prediction reorders, it does not cheat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.batch.base import AdmissionView, BatchPolicy, Reserve, rank_key
from llmplan.runtime.core.types import SeqState


@dataclass(slots=True)
class SJF(BatchPolicy):
    """Shortest predicted output first (by rank score; ties: arrival order). Strict priority: a candidate
    that does not fit blocks the ones after it, so long requests are not starved by memory
    fragmentation, only by the order itself (the known SJF trade-off)."""

    name: str = "sjf"
    static: bool = False
    reserve: Reserve = "none"
    uses_prediction: bool = True
    skip_blocked: bool = False
    time_invariant: bool = True
    descending: bool = False

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        if self.descending:
            return sorted(waiting, key=lambda s: (-rank_key(s), s.arrival_seq))
        return sorted(waiting, key=lambda s: (rank_key(s), s.arrival_seq))

    def order_key(self, seq: SeqState) -> tuple[float, ...] | None:
        return (-rank_key(seq),) if self.descending else (rank_key(seq),)


def LJF(**kw: object) -> SJF:  # noqa: N802 - a policy name, reads like a class
    """Longest predicted output first."""
    return SJF(name="ljf", descending=True, **kw)  # type: ignore[arg-type]
