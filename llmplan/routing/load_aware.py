"""Load-aware routing, the thesis's Algorithm 4-2.

Each instance's load is the sum of its normalised compute and memory use,

    L_i = C_i / C_max + M_i / M_max

with ``C`` the compute in use (the instance's busy share over the recent window, so
``C_max = 1``) plus optionally the prefill work already queued, and ``M`` the KV blocks in use
over the instance's KV capacity. The router takes the least-loaded instance; instances whose
load is within ``delta_l`` of the minimum count as equally loaded and the shortest queue among
them wins (then fewer queued prompt tokens, then the lowest index). The tie band matters
under bursts: requests arriving in the same instant see the same utilisation window, and
without it they would all pile onto one instance until the window catches up.

Instances whose KV memory is full (``M / M_max >= mem_full``) are skipped while another has
room, since a request routed there would only wait or preempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.routing.base import InstanceLoad
from llmplan.workload.types import RequestSpec


def instance_load(ld: InstanceLoad, queued_tokens_capacity: int = 0) -> float:
    """``C/C_max + M/M_max`` of Algorithm 4-2.

    ``queued_tokens_capacity`` > 0 adds the waiting prompt tokens, normalised by what the
    instance prefills in one window, to the compute term (the work it has already accepted).
    """
    c = ld.busy
    if queued_tokens_capacity > 0:
        c += ld.waiting_tokens / queued_tokens_capacity
    return c + ld.kv_usage


@dataclass(slots=True)
class RoutingStats:
    decisions: int = 0
    tie_breaks: int = 0  # decisions settled by queue length inside the delta_l band
    skipped_full: int = 0
    max_over_mean: list[float] = field(default_factory=list)  # load imbalance seen at each decision

    def summary(self) -> dict[str, float]:
        imb = self.max_over_mean
        return {
            "decisions": self.decisions,
            "tie_breaks": self.tie_breaks,
            "skipped_full": self.skipped_full,
            "mean_max_over_mean_load": sum(imb) / len(imb) if imb else 1.0,
            "worst_max_over_mean_load": max(imb) if imb else 1.0,
        }


def max_over_mean(values: Sequence[float]) -> float:
    mean = sum(values) / len(values) if values else 0.0
    return max(values) / mean if mean > 0 else 1.0


@dataclass(slots=True)
class LoadAwareRouter:
    """Algorithm 4-2: least ``C/Cmax + M/Mmax``; queue length breaks ties within ``delta_l``."""

    name: str = "load-aware"
    delta_l: float = 0.05
    mem_full: float = 0.98
    queued_tokens_capacity: int = 0
    stats: RoutingStats = field(default_factory=RoutingStats)

    def __post_init__(self) -> None:
        if self.delta_l < 0:
            raise LlmplanError(f"delta_l must be >= 0, got {self.delta_l}")
        if not 0 < self.mem_full <= 1:
            raise LlmplanError(f"mem_full must be in (0, 1], got {self.mem_full}")

    def loads(self, loads: Sequence[InstanceLoad]) -> list[float]:
        return [instance_load(ld, self.queued_tokens_capacity) for ld in loads]

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        if not loads:
            raise LlmplanError("no instance to route to; start at least one instance")
        values = self.loads(loads)
        self.stats.decisions += 1
        self.stats.max_over_mean.append(max_over_mean(values))
        cands = [(v, ld) for v, ld in zip(values, loads, strict=True) if ld.kv_usage < self.mem_full]
        if not cands:
            cands = list(zip(values, loads, strict=True))
        elif len(cands) < len(loads):
            self.stats.skipped_full += 1
        best = min(v for v, _ in cands)
        band = [ld for v, ld in cands if v <= best + self.delta_l]
        pick = min(band, key=lambda ld: (ld.queue_len, ld.waiting_tokens, ld.index))
        if len(band) > 1 and pick is not min(cands, key=lambda c: (c[0], c[1].index))[1]:
            self.stats.tie_breaks += 1
        return pick.index


def _register() -> None:
    # Makes get_router("load-aware") work once this module is imported.
    from llmplan.routing import register_router

    register_router("load-aware", LoadAwareRouter)


_register()
