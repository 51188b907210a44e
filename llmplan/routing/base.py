"""The router protocol: pick an instance for a request from a snapshot of instance loads.

Routers are plain objects used unchanged by the simulator and the live engine/front end. The
caller builds one :class:`InstanceLoad` per candidate instance at decision time; a router only
reads them (and may keep its own state, e.g. a round-robin cursor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmplan.roles import Role
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class InstanceLoad:
    """One instance's load at the moment of a routing decision (the router's snapshot).

    The simulator builds it from the instance's scheduler as stepping would show it at that
    instant (``llmplan.runtime.sim.simulator``); the front end from the backend's ``/metrics``
    scrape and its own in-flight counts (``llmplan.frontend.backends``), so a live snapshot may
    lag by one scrape. Invariants: counts are >= 0; ``0 <= kv_blocks_used <= kv_blocks_total``;
    ``0 <= busy <= 1``.
    """

    # Position in the list of candidates the router was given; what ``route`` returns.
    index: int
    # The instance's name (for logs and name-keyed router state); "" when unnamed.
    name: str = ""
    # Its serving role: "both" (colocated), "prefill" or "decode" (P/D disaggregation).
    role: Role = "both"
    # Sequences queued there and not admitted yet (preempted ones included).
    waiting: int = 0
    # Sequences in its running batch.
    running: int = 0
    # Tokens its queue still has to prefill (prompt + recomputed output, minus KV that arrives
    # with a hand-off), summed over ``waiting``.
    waiting_tokens: int = 0
    # KV-cache blocks in use, and the pool's size (blocks; a block holds block_size tokens).
    # kv_blocks_total >= 1 for a real instance (0 would read as full, see kv_usage).
    kv_blocks_used: int = 0
    kv_blocks_total: int = 1
    # Share of the recent sampling window the instance spent computing steps, 0..1.
    busy: float = 0.0
    # Its batch cap (sequences: the scheduler's max_num_seqs; the front end's in-flight cap for a
    # live backend); 0 when unknown.
    max_num_seqs: int = 0
    # Prefix-cache hook for prefix-aware / BanaServe routers: tokens of ``spec``'s prefix that
    # are already cached on this instance (local prefix cache or a store it can load from).
    # None when the instance has no prefix cache.
    cached_prefix_tokens: Callable[[RequestSpec], int] | None = None

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 1.0

    @property
    def queue_len(self) -> int:
        return self.waiting + self.running


class Router(Protocol):
    name: str

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        """Index (``InstanceLoad.index``) of the instance that should serve ``spec``."""
        ...
