"""Running independent simulations (policies, systems, sweep points) in parallel worker processes.

Each job simulates one (workload, policy) pair and computes its metrics in the worker, so
only the compact per-request frame travels back, never millions of token times. Progress
flows back through a queue that a thread in the parent drains into the rich display.
Workers are spawned, not forked: the parent runs a progress thread, and forking a
threaded process can copy a held lock into the child.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from llmplan.bench.config import BenchConfig, Cluster
from llmplan.errors import LlmplanError
from llmplan.metrics import RunMetrics
from llmplan.metrics.types import RunResult
from llmplan.workload.types import Workload

_QUEUE: Any = None


@dataclass(slots=True)
class SimJob:
    label: str  # progress label and result key
    policy: str  # a batch policy, or a system name (llmplan.bench.systems) in a system comparison
    workload: Workload
    cluster: Cluster
    cfg: BenchConfig


def _init(queue: Any) -> None:
    global _QUEUE
    _QUEUE = queue


def _throttled(label: str, sink: Callable[[str, int, int], None] | None) -> Callable[[int, int], None] | None:
    if sink is None:
        return None
    last = [0.0]

    def cb(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= 0.1:
            last[0] = now
            sink(label, done, total)

    return cb


def run_job(job: SimJob, sink: Callable[[str, int, int], None] | None = None) -> tuple[RunMetrics, dict]:
    from llmplan.metrics import compute_metrics

    if sink is None and _QUEUE is not None:
        sink = lambda lb, d, t: _QUEUE.put((lb, d, t))  # noqa: E731
    result, sim_cfg = simulate_once(
        job.workload, job.cluster, job.cfg, job.policy, _throttled(job.label, sink)
    )
    return compute_metrics(result, job.workload, warmup_s=job.cfg.warmup_s), sim_cfg


def _run_args(cfg: BenchConfig) -> dict[str, Any]:
    """The SimConfig fields a bench run takes from its config alike for a cluster and a system:
    the predictor, the engine's batching limits, the seed and whether token times are kept."""
    e = cfg.engine
    return {
        "predictor": cfg.predictor,
        "block_size": e.block_size,
        "chunked_prefill": e.chunked_prefill,
        "max_num_seqs": e.max_num_seqs,
        "max_num_batched_tokens": e.max_num_batched_tokens,
        "max_model_len": e.max_model_len,
        "seed": cfg.seed,
        "record_token_times": cfg.record_token_times,
    }


def simulate_once(
    workload: Workload,
    cluster: Cluster,
    cfg: BenchConfig,
    policy: str,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    from llmplan.runtime.sim import SimConfig, simulate

    systems = cluster.description.get("systems")
    if systems is not None:
        return _simulate_system(workload, systems, cfg, policy, progress)
    sc = SimConfig(
        instances=cluster.instances,
        policy=policy,
        router=cfg.router,
        disaggregation=None,  # roles are already on the instance specs (build_cluster)
        cost=cluster.cost_override,
        model=cluster.description["model"],  # a --plan file's model wins over --model
        topology=cluster.graph,
        **_run_args(cfg),
    )
    note = _attach_energy(sc, cluster, cfg.energy)
    out = simulate(workload, sc, progress=progress), sc.to_dict()
    if note:
        out[1]["energy"] = note
    return out


def _attach_energy(sc: Any, cluster: Cluster, mode: str) -> str | None:
    """Set ``sc.energy`` for ``mode`` when every instance's cost can be clock-scaled; else the
    reason energy is not modelled (a calibration table has no compute/memory split)."""
    if mode == "off":
        return None
    from llmplan.energy.green import EnergyControl
    from llmplan.energy.power import ClockedCost

    try:
        for inst in cluster.instances:
            ClockedCost.wrap(sc.cost if sc.cost is not None else inst.cost)
    except LlmplanError as e:
        if mode == "greenserve":
            raise
        return f"not modelled: {e}"
    sc.energy = EnergyControl(mode=mode, seed=sc.seed)
    return None


def _simulate_system(
    workload: Workload,
    layout: dict[str, Any],
    cfg: BenchConfig,
    system: str,
    progress: Callable[[int, int], None] | None,
) -> tuple[RunResult, dict[str, Any]]:
    from llmplan.bench.systems import controller_hook, system_config
    from llmplan.runtime.sim import simulate

    sc = system_config(
        system,
        model=cfg.model,
        gpu=layout["gpu"],
        gpus=layout["gpus"],
        pd=tuple(layout["pd"]),
        **_run_args(cfg),
    )
    result = simulate(workload, sc, progress=progress)
    out = sc.to_dict()
    hook = controller_hook(sc)
    if hook is not None:
        out["migrations_applied"] = len(hook.applied)
        out["controller_counters"] = {k: v for k, v in hook.controller.counters.items()}
    return result, out


def default_jobs(n_jobs: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_jobs, cpus))


def run_jobs(
    jobs: Sequence[SimJob],
    *,
    workers: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> list[tuple[RunMetrics, dict]]:
    """Results in the order of ``jobs``; ``workers=1`` runs in this process."""
    workers = default_jobs(len(jobs)) if workers is None else max(1, workers)
    if workers == 1 or len(jobs) == 1:
        return [run_job(j, on_progress) for j in jobs]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or not queue.empty():
            try:
                label, done, total = queue.get(timeout=0.1)
            except Exception:  # queue.Empty, or the queue closed at shutdown
                continue
            if on_progress is not None:
                on_progress(label, done, total)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(queue,)) as pool:
            futures = [pool.submit(run_job, j) for j in jobs]
            return [f.result() for f in futures]
    finally:
        stop.set()
        thread.join(timeout=2.0)
