"""BanaServe's router: load-aware over the global KV store.

With a global store every prefill instance can load any cached prefix layer by layer (hidden
behind compute, see :mod:`llmplan.kvstore.pipeline`), so cache locality no longer pins a
request to the instance that computed its prefix. The router therefore routes purely by load
(Algorithm 4-2) -- which is what removes the hot-spotting of prefix-aware routing under skewed
prefix popularity -- and the store hit only shortens the prefill wherever the request lands.

``store_prefix_tokens(spec)`` (optional) tells the router how much of the prompt the store
holds; it does not influence the choice, but the queued-work term of the load counts only the
tokens still to compute, and the router reports the store's hit tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from llmplan.errors import LlmplanError
from llmplan.routing.base import InstanceLoad
from llmplan.routing.load_aware import LoadAwareRouter, RoutingStats
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class BanaServeRouter:
    name: str = "banaserve"
    delta_l: float = 0.05
    mem_full: float = 0.98
    queued_tokens_capacity: int = 0
    store_prefix_tokens: Callable[[RequestSpec], int] | None = None
    stats: RoutingStats = field(default_factory=RoutingStats)
    store_hit_tokens: int = 0
    prompt_tokens: int = 0
    _inner: LoadAwareRouter | None = None

    def __post_init__(self) -> None:
        if self.delta_l < 0:
            raise LlmplanError(f"delta_l must be >= 0, got {self.delta_l}")
        self._inner = LoadAwareRouter(delta_l=self.delta_l, mem_full=self.mem_full,
                                      queued_tokens_capacity=self.queued_tokens_capacity, stats=self.stats)

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        hit = 0
        if self.store_prefix_tokens is not None:
            hit = min(self.store_prefix_tokens(spec), spec.prompt_tokens)
        self.store_hit_tokens += hit
        self.prompt_tokens += spec.prompt_tokens
        # Locality is deliberately ignored: strip per-instance cache hooks so a future change
        # to the load formula cannot reintroduce it by accident.
        plain = [replace(ld, cached_prefix_tokens=None) for ld in loads]
        return self._inner.route(spec, plain)

    def summary(self) -> dict[str, float]:
        hit_rate = self.store_hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return {**self.stats.summary(), "store_hit_token_rate": hit_rate}


def _register() -> None:
    # Makes get_router("banaserve") work once this module is imported.
    from llmplan.routing import register_router

    register_router("banaserve", BanaServeRouter)


_register()
