"""Baseline routers: round-robin, least-loaded and join-shortest-queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.routing.base import InstanceLoad
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class RoundRobin:
    name: str = "round-robin"
    _next: int = 0

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        pick = loads[self._next % len(loads)]
        self._next += 1
        return pick.index


@dataclass(slots=True)
class LeastLoaded:
    """Lowest ``busy + kv_usage`` (compute share plus memory share, each in [0, 1]); queue
    length breaks ties, then the lowest index. Instances whose waiting queue already exceeds
    ``max_queue_per_instance`` are avoided while another is below it."""

    name: str = "least-loaded"
    max_queue_per_instance: int | None = None

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        cands = loads
        if self.max_queue_per_instance is not None:
            ok = [ld for ld in loads if ld.waiting < self.max_queue_per_instance]
            cands = ok or loads
        best = min(cands, key=lambda ld: (ld.busy + ld.kv_usage, ld.queue_len, ld.index))
        return best.index


@dataclass(slots=True)
class JoinShortestQueue:
    """Fewest sequences (waiting + running); queued prompt tokens break ties."""

    name: str = "jsq"

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        return min(loads, key=lambda ld: (ld.queue_len, ld.waiting_tokens, ld.index)).index
