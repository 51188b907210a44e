"""The compared serving systems, each defined once, for the simulator and the live harness.

One :class:`SystemDef` per name says what the system IS: how its instances are laid out
(colocated replicas, a prefill:decode split, or one instance over worker processes), its
router, its admission, whether the instances share the global KV store, and whether the
migration controller runs. Both harnesses build from :data:`REGISTRY`:

* the simulator: :func:`system_config` turns a definition into a
  :class:`~llmplan.runtime.sim.SimConfig` (``llmplan bench --compare vllm,distserve,banaserve``,
  ``benchmarks/banaserve_compare.py``);
* the live harness: :func:`llmplan.bench.live.serve_argv` turns the same definition into a
  ``llmplan serve`` command line (``llmplan bench --compare ... --live``,
  ``benchmarks/banaserve_live.py``).

Where one side cannot realise part of a definition it says so: :func:`sim_gaps` and
:func:`live_gaps` list each difference (reports store them), and a definition a side cannot
run at all is refused in one line (:func:`system_config` for ``banaserve-workers``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from llmplan.errors import LlmplanError
from llmplan.registry import Registry, lowered

Layout = Literal["colocated", "pd", "workers"]


@dataclass(frozen=True, slots=True)
class SystemDef:
    """One serving system of the comparison."""

    name: str
    # "colocated": N replicas, each prefills and decodes; "pd": P prefill + D decode instances,
    # the prompt's KV handed from one to the other; "workers": one instance whose decoder
    # layers span worker processes.
    layout: Layout
    router: str  # llmplan.routing name; "" when there is one instance (nothing to route)
    admission: str  # the front end's admission order
    kv_store: bool  # the instances share the global KV store (prefix reuse across instances)
    controller: bool  # the migration controller (Algorithm 4-1) runs
    description: str
    compared: bool = True  # one of the default ``--compare`` systems

    def roles(self, instances: int, pd: tuple[int, int] | None = None) -> list[str]:
        """The role of each of ``instances`` instances (a P:D split: ``pd`` or half:half)."""
        if self.layout == "workers":
            return ["both"]
        if self.layout == "colocated":
            return ["both"] * instances
        n_p, n_d = pd if pd is not None else (instances // 2, instances - instances // 2)
        if n_p < 1 or n_d < 1 or n_p + n_d != instances:
            raise LlmplanError(f"P:D split {n_p}:{n_d} must use all {instances} instances with >= 1 of each")
        return ["prefill"] * n_p + ["decode"] * n_d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


REGISTRY: dict[str, SystemDef] = {
    d.name: d
    for d in (
        SystemDef(
            name="vllm",
            layout="colocated",
            router="round-robin",
            admission="fcfs",
            kv_store=False,
            controller=False,
            description="colocated continuous batching (FCFS), round-robin over the replicas",
        ),
        SystemDef(
            name="distserve",
            layout="pd",
            router="least-loaded",
            admission="fcfs",
            kv_store=False,
            controller=False,
            description="static prefill:decode split, least-loaded routing, the prompt's KV handed "
            "from the prefill to the decode instance",
        ),
        SystemDef(
            name="banaserve",
            layout="pd",
            router="banaserve",
            admission="fcfs",
            kv_store=True,
            controller=True,
            description="prefill:decode split, BanaServe's load-aware router (Algorithm 4-2) over the "
            "global KV store, the migration controller (Algorithm 4-1) every tick",
        ),
        SystemDef(
            name="banaserve-workers",
            layout="workers",
            router="",
            admission="fcfs",
            kv_store=False,
            controller=True,
            description="one instance whose decoder layers span two worker processes, the migration "
            "controller moving boundary layers or offloading attention between them",
            compared=False,
        ),
    )
}
# The simulated global KV store of systems with ``kv_store``: a host-memory tier (a quarter of a
# DGX A100's 1 TiB of DRAM) loaded over PCIe 4.0 x16 (llmplan.runtime.sim.kvstore).
SIM_STORE_GB = 256.0
SIM_STORE_GBPS = 25.0

# The systems ``--compare`` accepts (the simulator runs these).
SYSTEMS = tuple(n for n, d in REGISTRY.items() if d.compared)


_LOOKUP: Registry[SystemDef] = Registry(
    "system", REGISTRY, normalize=lowered, choose="choose from ", sort=False
)


def get_system(name: str) -> SystemDef:
    return _LOOKUP.get(name)


def sim_gaps(system: SystemDef) -> list[str]:
    """What the simulator does not realise of ``system`` (stored in report.json)."""
    gaps = []
    if system.kv_store:
        gaps.append(
            f"global KV store: simulated as one LRU memory tier of {SIM_STORE_GB:g} GiB shared by all "
            f"instances below their GPU prefix caches, loads at {SIM_STORE_GBPS:g} GB/s overlapped with "
            "compute; the disk tier is not simulated"
        )
    if system.admission != "fcfs":
        gaps.append(f"admission {system.admission}: not simulated (requests are routed on arrival)")
    return gaps


def live_gaps(system: SystemDef) -> list[str]:
    """What the live built-in engine on CPU does not realise of ``system`` (stored in report.json)."""
    gaps = []
    if system.layout == "pd" and not system.kv_store:
        gaps.append(
            "P:D KV hand-off goes through the global KV store (the live engine's only hand-off path), "
            "so the instances also share prompt prefixes through it"
        )
    if system.layout == "pd" and system.controller:
        gaps.append(
            "migration controller: not run (the live controller exists only inside one multi-worker "
            "instance, banaserve-workers; a P:D deployment's instances are single-worker)"
        )
    return gaps


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
    """A :class:`~llmplan.runtime.sim.SimConfig` for system ``name`` from its definition:
    ``gpus`` TP=1 instances of ``model`` on ``gpu``, split ``pd`` when the system splits.

    A system with the controller gets a :class:`~llmplan.migrate.sim_hook.ControllerHook` in
    ``tick_hooks``; read its ``applied`` list and ``controller.decisions`` after the run.
    """
    import llmplan.routing.banaserve  # noqa: F401  (registers "banaserve")
    from llmplan.runtime.sim import SimConfig

    system = get_system(name)
    if not system.compared:
        raise LlmplanError(
            f"{system.name} runs live only (the simulator has no instance spanning worker processes); "
            f"simulate one of {', '.join(SYSTEMS)}"
        )
    if system.layout == "pd" and (pd[0] < 1 or pd[1] < 1 or sum(pd) != gpus):
        raise LlmplanError(f"P:D split {pd[0]}:{pd[1]} must use all {gpus} GPUs with >= 1 of each")
    common: dict[str, Any] = dict(model=model, gpu=gpu, tp=1, policy=policy, instances=gpus, **sim_kwargs)
    disaggregation = pd if system.layout == "pd" else None
    if system.kv_store:
        common.setdefault("kv_store_gb", SIM_STORE_GB)
        common.setdefault("kv_store_gbps", SIM_STORE_GBPS)
    if not system.controller:
        return SimConfig(disaggregation=disaggregation, router=system.router, **common)
    from llmplan.migrate.controller import ControllerConfig, MigrationController
    from llmplan.migrate.sim_hook import ControllerHook
    from llmplan.models import get_model_spec

    ctl = controller or MigrationController(ControllerConfig(period_s=1.0, horizon_s=10.0))
    hook = ControllerHook(ctl, kv_bytes_per_token=get_model_spec(model).kv_bytes_per_token)
    hooks = list(common.pop("tick_hooks", [])) + [hook]
    return SimConfig(disaggregation=disaggregation, router=system.router, tick_hooks=hooks, **common)


def controller_hook(config) -> Any:
    """The :class:`ControllerHook` of a config with the controller (None for the others)."""
    from llmplan.migrate.sim_hook import ControllerHook

    return next((h for h in config.tick_hooks if isinstance(h, ControllerHook)), None)
