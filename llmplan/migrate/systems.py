"""The three serving systems of the BanaServe comparison as simulator configurations.

``system_config("banaserve", ...)`` is what ``llmplan bench --compare vllm,distserve,banaserve``
runs for each name; ``benchmarks/banaserve_compare.py`` uses it too. All three get the same GPUs
and the same batch policy, so only the architecture differs:

* ``vllm``      -- colocated continuous batching, round-robin over the replicas;
* ``distserve`` -- static prefill:decode split, least-loaded routing, KV handed over the link;
* ``banaserve`` -- the same P:D split, BanaServe's load-aware router and the migration controller
  on every tick (:class:`llmplan.migrate.sim_hook.ControllerHook`).
"""

from __future__ import annotations

from typing import Any

from llmplan.errors import LlmplanError

SYSTEMS = ("vllm", "distserve", "banaserve")


def system_config(
    name: str,
    *,
    model: str = "llama-2-13b",
    gpu: str = "A100-SXM-80GB",
    gpus: int = 4,
    pd: tuple[int, int] = (2, 2),
    policy: str = "fcfs",
    controller: Any = None,
    **sim_kwargs: Any,
):
    """A :class:`~llmplan.runtime.sim.SimConfig` for system ``name``.

    For ``banaserve`` the config's ``tick_hooks`` holds the :class:`ControllerHook`; read its
    ``applied`` list and ``controller.decisions`` after the run.
    """
    import llmplan.routing.banaserve  # noqa: F401  (registers "banaserve")
    from llmplan.runtime.sim import SimConfig

    key = name.strip().lower()
    if key not in SYSTEMS:
        raise LlmplanError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    if key != "vllm" and (pd[0] < 1 or pd[1] < 1 or sum(pd) != gpus):
        raise LlmplanError(f"P:D split {pd[0]}:{pd[1]} must use all {gpus} GPUs with >= 1 of each")
    common: dict[str, Any] = dict(model=model, gpu=gpu, tp=1, policy=policy, instances=gpus, **sim_kwargs)
    if key == "vllm":
        return SimConfig(router="round-robin", **common)
    if key == "distserve":
        return SimConfig(disaggregation=pd, router="least-loaded", **common)
    from llmplan.migrate.controller import ControllerConfig, MigrationController
    from llmplan.migrate.sim_hook import ControllerHook
    from llmplan.models import get_model_spec

    ctl = controller or MigrationController(ControllerConfig(period_s=1.0, horizon_s=10.0))
    hook = ControllerHook(ctl, kv_bytes_per_token=get_model_spec(model).kv_bytes_per_token)
    hooks = list(common.pop("tick_hooks", [])) + [hook]
    return SimConfig(disaggregation=pd, router="banaserve", tick_hooks=hooks, **common)


def controller_hook(config) -> Any:
    """The :class:`ControllerHook` of a ``banaserve`` config (None for the others)."""
    from llmplan.migrate.sim_hook import ControllerHook

    return next((h for h in config.tick_hooks if isinstance(h, ControllerHook)), None)
