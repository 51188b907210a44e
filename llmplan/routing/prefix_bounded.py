"""Prefix affinity under a load bound (``prefix-bounded``).

Prefix-aware routers send a request where its longest prefix is cached; on traffic where a few
prefixes dominate (a popular system prompt, long chat sessions) that piles requests onto a few
engines (vllm-project/router#179, llm-d#355). This router keeps the affinity but never lets an
instance take more than ``bound`` times its fair share of the requests routed so far: the
"consistent hashing with bounded loads" rule (Mirrokni, Thorup, Zadimoghaddam, SODA 2018)
applied to cache affinity. Instance *i* is eligible while

    routed_i + 1 <= bound * (routed_total + 1) / n

Among eligible instances the one holding the longest cached prefix of the prompt wins (when it
covers at least ``min_match`` of the prompt), ties and misses going to the shortest queue
(queued + running sequences), then the fewest routed. So routed max/mean stays <= ``bound``
(up to one request of rounding) whatever the traffic, while a session keeps its instance
unless that instance is already at the bound.

Cached prefixes come from ``InstanceLoad.cached_prefix_tokens`` (the instance's prefix cache,
exact in the simulator); without it, from the router's own record of where each
``spec.prefix_id`` went, as the prefix-aware router does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.routing.base import InstanceLoad
from llmplan.routing.load_aware import RoutingStats, max_over_mean
from llmplan.routing.prefix_aware import matched_prefix_tokens
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class PrefixBoundedRouter:
    name: str = "prefix-bounded"
    bound: float = 1.15
    min_match: float = 0.0
    stats: RoutingStats = field(default_factory=RoutingStats)
    routed: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    by_cache: int = 0
    by_load: int = 0
    _seen: dict[int, dict[int, int]] = field(default_factory=lambda: defaultdict(dict))

    def __post_init__(self) -> None:
        if not self.bound >= 1.0:
            raise LlmplanError(f"bound must be >= 1 (1 = strict round-robin shares), got {self.bound}")
        if not 0.0 <= self.min_match <= 1.0:
            raise LlmplanError(f"min_match must be in [0, 1], got {self.min_match}")

    def matched_tokens(self, spec: RequestSpec, ld: InstanceLoad) -> int:
        return matched_prefix_tokens(spec, ld, self._seen[ld.index])

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        if not loads:
            raise LlmplanError("no instance to route to; start at least one instance")
        self.stats.decisions += 1
        self.stats.max_over_mean.append(max_over_mean([float(ld.queue_len) for ld in loads]))
        total = sum(self.routed[ld.index] for ld in loads)
        cap = self.bound * (total + 1) / len(loads)
        eligible = [ld for ld in loads if self.routed[ld.index] + 1 <= cap] or list(loads)
        matched = {ld.index: self.matched_tokens(spec, ld) for ld in eligible}
        routed = self.routed
        best = max(eligible, key=lambda ld: (matched[ld.index], -ld.queue_len, -routed[ld.index], -ld.index))
        need = max(1.0, self.min_match * spec.prompt_tokens)
        if matched[best.index] >= need:
            self.by_cache += 1
            pick = best
        else:
            self.by_load += 1
            pick = min(eligible, key=lambda ld: (ld.queue_len, self.routed[ld.index], ld.index))
        self.routed[pick.index] += 1
        if spec.prefix_id is not None and spec.prefix_tokens > 0:
            seen = self._seen[pick.index]
            seen[spec.prefix_id] = max(seen.get(spec.prefix_id, 0), spec.prefix_tokens)
        return pick.index

    def summary(self) -> dict[str, float]:
        return {**self.stats.summary(), "by_cache": self.by_cache, "by_load": self.by_load}


def _register() -> None:
    from llmplan.routing import register_router

    register_router("prefix-bounded", PrefixBoundedRouter)


_register()
