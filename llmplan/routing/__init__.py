"""Routers: plain objects that map a request and a load snapshot to an instance.

``get_router("jsq")`` builds one by name. Other modules of this package (prefix-aware,
BanaServe) register more with :func:`register_router`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.routing.base import InstanceLoad, Router
from llmplan.routing.basic import JoinShortestQueue, LeastLoaded, RoundRobin

ROUTERS: dict[str, Callable[..., Router]] = {
    "round-robin": RoundRobin,
    "least-loaded": LeastLoaded,
    "jsq": JoinShortestQueue,
}
ALIASES = {
    "rr": "round-robin",
    "roundrobin": "round-robin",
    "join-shortest-queue": "jsq",
    "ll": "least-loaded",
}


# Routers defined in other modules of this package register themselves on import; they are
# imported on first use so that `get_router("banaserve")` works without importing them first.
LAZY_ROUTERS = {
    "load-aware": "llmplan.routing.load_aware",
    "prefix-aware": "llmplan.routing.prefix_aware",
    "prefix-bounded": "llmplan.routing.prefix_bounded",
    "banaserve": "llmplan.routing.banaserve",
}


def register_router(name: str, factory: Callable[..., Router]) -> None:
    ROUTERS[name] = factory


def router_names() -> list[str]:
    return sorted(set(ROUTERS) | set(LAZY_ROUTERS))


def get_router(name: str, **kwargs: Any) -> Router:
    key = name.strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in ROUTERS and key in LAZY_ROUTERS:
        import importlib

        importlib.import_module(LAZY_ROUTERS[key])
    factory = ROUTERS.get(key)
    if factory is None:
        raise LlmplanError(f"unknown router {name!r}; choose one of: {', '.join(router_names())}")
    try:
        return factory(**kwargs)
    except (TypeError, ValueError) as e:
        raise LlmplanError(f"bad options for router {key!r}: {e}") from None


__all__ = [
    "ALIASES",
    "LAZY_ROUTERS",
    "ROUTERS",
    "InstanceLoad",
    "JoinShortestQueue",
    "LeastLoaded",
    "RoundRobin",
    "Router",
    "get_router",
    "register_router",
    "router_names",
]
