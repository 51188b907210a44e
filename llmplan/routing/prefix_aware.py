"""Prefix-cache-aware routing, as SGLang's router does it (its ``cache_aware`` policy).

While the cluster is balanced, a request goes where the longest prefix of it is already
cached (if that covers more than ``cache_threshold`` of the prompt), else to the instance with
the least cached state (the most room to cache it). Once the load is imbalanced --
``max - min > balance_abs_threshold`` *and* ``max > balance_rel_threshold * min``, load being
the number of queued + running sequences -- locality is dropped and the shortest queue wins,
because a cache hit saves less than the queueing it would cost.

Where the prefix sits comes from ``InstanceLoad.cached_prefix_tokens`` when the instance
reports it (the engine's prefix cache, the simulator's); otherwise the router keeps SGLang's
*approximate* view: it remembers which instance it sent each prefix to (``spec.prefix_id``,
``spec.prefix_tokens``) and assumes it is still cached there.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.routing.base import InstanceLoad
from llmplan.routing.load_aware import RoutingStats, max_over_mean
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class PrefixAwareRouter:
    name: str = "prefix-aware"
    cache_threshold: float = 0.5
    balance_abs_threshold: int = 32
    balance_rel_threshold: float = 1.5
    stats: RoutingStats = field(default_factory=RoutingStats)
    by_cache: int = 0
    by_balance: int = 0
    by_capacity: int = 0
    # Approximate cache view: instance index -> prefix_id -> cached prefix tokens.
    _seen: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        if not 0 <= self.cache_threshold <= 1:
            raise LlmplanError(f"cache_threshold must be in [0, 1], got {self.cache_threshold}")
        if self.balance_abs_threshold < 0 or self.balance_rel_threshold < 1:
            raise LlmplanError("balance thresholds: abs must be >= 0 and rel >= 1 (SGLang defaults: 32, 1.5)")

    def matched_tokens(self, spec: RequestSpec, ld: InstanceLoad) -> int:
        return matched_prefix_tokens(spec, ld, self._seen[ld.index])

    def imbalanced(self, loads: Sequence[InstanceLoad]) -> bool:
        q = [ld.queue_len for ld in loads]
        return max(q) - min(q) > self.balance_abs_threshold and max(q) > self.balance_rel_threshold * min(q)

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        if not loads:
            raise LlmplanError("no instance to route to; start at least one instance")
        self.stats.decisions += 1
        self.stats.max_over_mean.append(max_over_mean([float(ld.queue_len) for ld in loads]))
        if self.imbalanced(loads):
            self.by_balance += 1
            pick = min(loads, key=lambda ld: (ld.queue_len, ld.index))
        else:
            matched = {ld.index: self.matched_tokens(spec, ld) for ld in loads}
            best = max(loads, key=lambda ld: (matched[ld.index], -ld.queue_len, -ld.index))
            if spec.prompt_tokens and matched[best.index] / spec.prompt_tokens > self.cache_threshold:
                self.by_cache += 1
                pick = best
            else:
                self.by_capacity += 1
                pick = min(loads, key=lambda ld: (self._cached_size(ld), ld.queue_len, ld.index))
        if spec.prefix_id is not None and spec.prefix_tokens > 0:
            seen = self._seen[pick.index]
            seen[spec.prefix_id] = max(seen.get(spec.prefix_id, 0), spec.prefix_tokens)
        return pick.index

    def _cached_size(self, ld: InstanceLoad) -> float:
        """SGLang picks the smallest radix tree; with real reports, the least KV in use."""
        if ld.cached_prefix_tokens is not None:
            return ld.kv_usage
        return float(sum(self._seen[ld.index].values()))

    def summary(self) -> dict[str, float]:
        return {**self.stats.summary(), "by_cache": self.by_cache, "by_balance": self.by_balance,
                "by_capacity": self.by_capacity}


def _register() -> None:
    # Makes get_router("prefix-aware") work once this module is imported.
    from llmplan.routing import register_router

    register_router("prefix-aware", PrefixAwareRouter)


_register()


def matched_prefix_tokens(spec: RequestSpec, ld: InstanceLoad, seen: dict[int, int]) -> int:
    """Prompt tokens of ``spec`` that instance ``ld`` holds cached: its own cache probe when the
    instance exports one, else the prefix tokens this router has sent it under ``spec.prefix_id``
    (``seen``: prefix id -> tokens). Shared by the prefix-aware and prefix-bounded routers."""
    if ld.cached_prefix_tokens is not None:
        return min(ld.cached_prefix_tokens(spec), spec.prompt_tokens)
    if spec.prefix_id is None:
        return 0
    return min(seen.get(spec.prefix_id, 0), spec.prefix_tokens, spec.prompt_tokens)
