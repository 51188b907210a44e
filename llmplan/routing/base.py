"""The router protocol: pick an instance for a request from a snapshot of instance loads.

Routers are plain objects used unchanged by the simulator and the live engine/front end. The
caller builds one :class:`InstanceLoad` per candidate instance at decision time; a router only
reads them (and may keep its own state, e.g. a round-robin cursor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class InstanceLoad:
    """One instance's load at the moment of a routing decision."""

    index: int  # position in the list the router returns an index into
    name: str = ""
    role: str = "both"  # both | prefill | decode
    waiting: int = 0  # queued sequences (not admitted yet)
    running: int = 0  # sequences in the running batch
    waiting_tokens: int = 0  # prompt tokens still to prefill in the queue
    kv_blocks_used: int = 0
    kv_blocks_total: int = 1
    busy: float = 0.0  # compute utilisation over the recent window, 0..1
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
