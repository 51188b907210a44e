"""Routers: plain objects that map a request and a load snapshot to an instance.

``get_router("jsq")`` builds one by name. Other modules of this package (prefix-aware,
BanaServe) register more with :func:`register_router`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmplan.registry import Registry
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


REGISTRY: Registry[Callable[..., Router]] = Registry("router", ROUTERS, aliases=ALIASES, lazy=LAZY_ROUTERS)


def register_router(name: str, factory: Callable[..., Router]) -> None:
    REGISTRY.register(name, factory)


def router_names() -> list[str]:
    return REGISTRY.names()


def get_router(name: str, **kwargs: Any) -> Router:
    return REGISTRY.create(name, **kwargs)


__all__ = [
    "ALIASES",
    "LAZY_ROUTERS",
    "REGISTRY",
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
