"""The front end's admission queue: who is dispatched next when every backend is busy.

Requests wait here while all healthy backends are at their concurrency limit. The
order follows UELLM's SLO-ODBS idea at request granularity: a weighted sum of the
request's normalised output length (short first: it frees a slot sooner) and its
normalised deadline (urgent first). ``w_len = 0`` gives pure earliest-deadline order
(SLO-DBS), ``w_slo = 0`` shortest-output order (ODBS); ``fcfs`` keeps arrival order.
A bounded queue turns overload into explicit 429s instead of unbounded waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from llmplan.registry import Registry
from llmplan.workload.types import RequestSpec

AdmissionPolicy = Literal["fcfs", "slo-odbs", "slo-dbs", "odbs"]
# Each policy -> the (w_len, w_slo) it forces; None keeps the configured weight. fcfs ignores
# both (it orders by arrival).
_FORCED_WEIGHTS: dict[str, tuple[float | None, float | None]] = {
    "fcfs": (None, None),
    "slo-odbs": (None, None),
    "slo-dbs": (0.0, None),
    "odbs": (None, 0.0),
}
REGISTRY: Registry[tuple[float | None, float | None]] = Registry(
    "admission policy", _FORCED_WEIGHTS, normalize=str, choose="choose one of ", sort=False
)
POLICIES: tuple[str, ...] = tuple(REGISTRY.names())


class AdmissionQueueFull(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"admission queue full; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class Ticket:
    arrival: float
    max_tokens: int
    deadline_s: float  # absolute monotonic deadline, inf when the request has none
    seq: int
    spec: RequestSpec | None = None  # what the router sees
    # Set by the vLLM priority route (llmplan.frontend.priority): the queue orders by it then.
    priority: int | None = None
    granted: asyncio.Future[Any] = field(repr=False, default=None)  # type: ignore[assignment]


@dataclass(slots=True)
class AdmissionQueue:
    policy: AdmissionPolicy = "slo-odbs"
    capacity: int = 1024
    w_len: float = 0.5
    w_slo: float = 0.5
    # Output length and deadline are normalised by these scales before weighting.
    len_scale: float = 512.0
    slo_scale_s: float = 30.0
    _waiting: list[Ticket] = field(default_factory=list)
    _counter: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        w_len, w_slo = REGISTRY.get(self.policy)
        if w_len is not None:
            self.w_len = w_len
        if w_slo is not None:
            self.w_slo = w_slo

    def __len__(self) -> int:
        return len(self._waiting)

    def _score(self, t: Ticket, now: float) -> float:
        if t.priority is not None:
            return t.priority  # the same order the backends' queues keep
        if self.policy == "fcfs":
            return t.seq
        slack = t.deadline_s - now
        slack_term = 1.0 if math.isinf(slack) else min(max(slack / self.slo_scale_s, 0.0), 1.0)
        return self.w_len * min(t.max_tokens / self.len_scale, 1.0) + self.w_slo * slack_term

    def enqueue(
        self,
        max_tokens: int,
        deadline_s: float | None,
        spec: RequestSpec | None = None,
        priority: int | None = None,
    ) -> Ticket:
        if len(self._waiting) >= self.capacity:
            raise AdmissionQueueFull(retry_after_s=1.0)
        now = time.monotonic()
        ticket = Ticket(
            arrival=now,
            max_tokens=max_tokens,
            deadline_s=math.inf if deadline_s is None else now + deadline_s,
            seq=next(self._counter),
            spec=spec,
            priority=priority,
            granted=asyncio.get_running_loop().create_future(),
        )
        self._waiting.append(ticket)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        if ticket in self._waiting:
            self._waiting.remove(ticket)

    def requeue(self, ticket: Ticket) -> None:
        """Put a popped ticket back; it keeps its arrival order and deadline."""
        self._waiting.append(ticket)

    def pop_next(self) -> Ticket | None:
        """Take the best waiting ticket (lowest score; arrival order breaks ties)."""
        if not self._waiting:
            return None
        now = time.monotonic()
        best = min(self._waiting, key=lambda t: (self._score(t, now), t.seq))
        self._waiting.remove(best)
        return best
