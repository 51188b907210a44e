"""Run a deployment: supervised engine servers behind one front end, until SIGTERM.

``serve_deployment`` starts every instance, waits for all of them to be healthy, then
serves the front end. Supervisor events (crash, restart, give-up) go to the log, to
``/metrics`` and to the backend pool, so a crashed instance stops receiving traffic at
once rather than at the next health poll. SIGTERM/SIGINT stop the front end first (no
new requests), then the instances (which drain their running requests).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn

from llmplan.frontend.admission import POLICIES, AdmissionQueue
from llmplan.frontend.backends import Backend, BackendPool
from llmplan.frontend.pd import get_handoff
from llmplan.frontend.priority import VllmPriority
from llmplan.frontend.proxy import Frontend, build_app
from llmplan.frontend.supervisor import InstanceSpec, Supervisor, SupervisorEvent
from llmplan.routing import get_router
from llmplan.runtime.server.guard import GuardConfig, uvicorn_options

log = logging.getLogger("llmplan.frontend")


@dataclass(slots=True)
class DeployConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    router: str = "least-loaded"
    admission: str = "slo-odbs"
    max_queue: int = 1024
    max_inflight_per_backend: int = 64
    max_retries: int = 2
    log_dir: Path = Path("llmplan-logs")
    health_timeout_s: float = 900.0
    max_restarts: int = 3
    # P/D: how the decode instance finds the prefill's KV (llmplan.frontend.pd): "connector"
    # for vLLM, "store" for built-in instances sharing a global KV store.
    pd_handoff: str = "connector"
    no_backend_timeout_s: float = 30.0
    # vLLM backends started with --scheduling-policy priority: the front end sets each request's
    # priority from the batch policy behind ``admission`` (llmplan.frontend.priority).
    vllm_priority: bool = False
    # vLLM backends running llmplan's PolicyScheduler (--vllm-route scheduler-cls): the front end
    # passes each request's SLOs to it as vllm_xargs.
    vllm_slo_xargs: bool = False
    # The front end's API key (its backends get it too), body limit and connection clocks.
    guard: GuardConfig = field(default_factory=GuardConfig)


def backends_for(specs: list[InstanceSpec], max_inflight: int) -> list[Backend]:
    """One backend per instance; each prefill instance is paired with a decode instance
    (round-robin over the decode instances) that receives its KV."""
    decodes = [s for s in specs if s.role == "decode"]
    out: list[Backend] = []
    prefill_seen = 0
    for s in specs:
        decode_url = None
        if s.role == "prefill":
            if not decodes:
                from llmplan.errors import LlmplanError

                raise LlmplanError("a P/D deployment needs at least one decode instance; fix the plan")
            decode_url = decodes[prefill_seen % len(decodes)].url
            prefill_seen += 1
        out.append(
            Backend(name=s.name, url=s.url, role=s.role, max_inflight=max_inflight, decode_url=decode_url)
        )
    return out


async def serve_deployment(
    specs: list[InstanceSpec],
    cfg: DeployConfig,
    *,
    on_event: Callable[[SupervisorEvent], None] | None = None,
    ready: Callable[[str, Supervisor, Frontend], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    pool_ref: dict[str, BackendPool] = {}
    frontend_ref: dict[str, Frontend] = {}

    def handle(event: SupervisorEvent) -> None:
        log.info("instance %s %s %s", event.instance, event.kind, event.detail)
        fe = frontend_ref.get("fe")
        if fe is not None:
            fe.metrics.instance_events.labels(event.instance, event.kind).inc()
            if event.kind in ("crashed", "failed"):
                for b in fe.pool.backends:
                    if b.name == event.instance:
                        fe.pool.mark_failed(b)
        if on_event is not None:
            on_event(event)

    check_ports(specs, cfg)
    if cfg.guard.api_key is not None:
        for spec in specs:  # the environment, not argv: `ps` shows argv to every user
            spec.env.setdefault("LLMPLAN_API_KEY", cfg.guard.api_key)
            spec.env.setdefault("VLLM_API_KEY", cfg.guard.api_key)
    sup = Supervisor(
        specs,
        log_dir=cfg.log_dir,
        health_timeout_s=cfg.health_timeout_s,
        max_restarts=cfg.max_restarts,
        on_event=handle,
    )
    try:
        await sup.start()
        pool = BackendPool(backends_for(specs, cfg.max_inflight_per_backend), get_router(cfg.router))
        pool_ref["pool"] = pool
        priority = None
        if cfg.vllm_priority:
            priority = VllmPriority.for_admission(cfg.admission, epoch=time.monotonic())
        # With priorities the queue orders tickets by them; its own policy name only labels it.
        queue_policy = cfg.admission if cfg.admission in POLICIES else "fcfs"
        fe = Frontend(
            pool,
            admission=AdmissionQueue(policy=queue_policy, capacity=cfg.max_queue),  # type: ignore[arg-type]
            priority=priority,
            slo_xargs=cfg.vllm_slo_xargs,
            max_retries=cfg.max_retries,
            no_backend_timeout_s=cfg.no_backend_timeout_s,
            handoff=get_handoff(cfg.pd_handoff),
            backend_api_key=cfg.guard.api_key,
        )
        frontend_ref["fe"] = fe
        server = uvicorn.Server(
            uvicorn.Config(build_app(fe, cfg.guard), host=cfg.host, port=cfg.port, log_level="warning",
                           **uvicorn_options(cfg.guard))
        )
        # uvicorn installs its own SIGINT/SIGTERM handlers that set should_exit; we only
        # need to stop the instances once it returns.
        serve_task = asyncio.create_task(server.serve())
        while not server.started and not serve_task.done():
            await asyncio.sleep(0.05)
        if ready is not None and server.started:
            ready(f"http://{cfg.host}:{cfg.port}", sup, fe)
        while stop is not None and not serve_task.done():
            if stop.is_set():
                server.should_exit = True
                break
            await asyncio.sleep(0.1)
        await serve_task
    finally:
        await sup.stop()


def check_ports(specs: list[InstanceSpec], cfg: DeployConfig) -> None:
    """Refuse to start when a port of the deployment is already held: by backends an earlier
    front end left behind, say, which would answer our health checks while our own backends
    crash-loop on "address in use"."""
    from llmplan.errors import LlmplanError
    from llmplan.runtime.server.run import port_is_free

    wanted = [("the front end", cfg.host, cfg.port)] + [(f"instance {s.name}", s.host, s.port) for s in specs]
    for what, host, port in wanted:
        if not port_is_free(host, port):
            raise LlmplanError(
                f"port {port} on {host} (for {what}) is held by a process this front end did not start; "
                "stop it (backends of an earlier front end?) or pick another --port / --base-port"
            )


def run(specs: list[InstanceSpec], cfg: DeployConfig, **kw: object) -> None:
    """Blocking entry point for the CLI."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    asyncio.run(serve_deployment(specs, cfg, **kw))  # type: ignore[arg-type]


def vllm_specs(
    plan_path: Path,
    model: str | None,
    *,
    host: str,
    base_port: int,
    connector: str = "NixlConnector",
    served_model_name: str | None = None,
    vllm_bin: str | None = None,
) -> list[InstanceSpec]:
    """One supervised `vllm serve` per plan instance, ports from ``base_port`` upwards.
    ``model`` (a local path or hub id) overrides the plan's model name."""
    from llmplan.frontend.launch import VllmInstance, vllm_spec
    from llmplan.plan.types import Plan
    from llmplan.plan.vllm import plan_launches

    plan = Plan.load(plan_path)
    specs = []
    for k, ln in enumerate(plan_launches(plan)):
        inst = VllmInstance(
            name=ln.name,
            gpus=[d for ds in ln.devices.values() for d in ds],
            tensor_parallel=ln.tensor_parallel,
            pipeline_parallel=ln.pipeline_parallel,
            role=ln.role,
            extra_args=ln.args[4:],  # TP/PP flags come from the instance itself
        )
        spec = vllm_spec(
            inst,
            model or ln.model,
            base_port + k,
            host=host,
            served_model_name=served_model_name,
            connector=connector,
            vllm_bin=vllm_bin,
        )  # type: ignore[arg-type]
        # Multi-node instances get their devices from Ray, not from one CUDA_VISIBLE_DEVICES.
        spec.env = dict(ln.env)
        specs.append(spec)
    return specs


def builtin_specs(
    n: int,
    *,
    host: str,
    base_port: int,
    dummy_weights: str | None,
    model: str | None,
    extra_args: list[str],
    pd: tuple[int, int] | None = None,
    kv_store: str | None = None,
    ports: list[int] | None = None,
) -> list[InstanceSpec]:
    """``n`` built-in servers on consecutive ports. With ``pd=(P, D)`` the first P are prefill
    instances (``prefill0..``) and the other D decode instances (``decode0..``); with
    ``kv_store`` every instance shares that global KV store directory, which is how a P/D
    pair hands the KV over (see ``llmplan.frontend.pd.StoreHandoff``). ``ports`` overrides the
    consecutive ports from ``base_port``."""
    from llmplan.errors import LlmplanError
    from llmplan.frontend.launch import builtin_spec

    if pd is not None and (pd[0] < 1 or pd[1] < 1 or sum(pd) != n):
        raise LlmplanError(f"P:D {pd[0]}:{pd[1]} does not split {n} instances; make P+D equal --instances")
    if pd is not None and kv_store is None:
        raise LlmplanError("built-in P/D hands the KV over through the global store; give --kv-store DIR")
    if ports is not None and len(ports) != n:
        raise LlmplanError(f"{len(ports)} ports for {n} instances; give one port per instance")
    store_args = ["--kv-store", kv_store] if kv_store is not None else []
    specs = []
    for i in range(n):
        if pd is None:
            name, role = f"engine{i}", "both"
        elif i < pd[0]:
            name, role = f"prefill{i}", "prefill"
        else:
            name, role = f"decode{i - pd[0]}", "decode"
        spec = builtin_spec(
            name,
            ports[i] if ports is not None else base_port + i,
            dummy_weights=dummy_weights,
            model=model,
            host=host,
            extra_args=extra_args + store_args,
        )
        spec.role = role  # type: ignore[assignment]
        specs.append(spec)
    return specs
