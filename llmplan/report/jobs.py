"""Running independent simulations (policies, sweep points) in parallel worker processes.

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

from llmplan.metrics import RunMetrics

_QUEUE: Any = None


@dataclass(slots=True)
class SimJob:
    label: str  # progress label and result key
    policy: str
    workload: Any  # Workload
    cluster: Any  # runner.Cluster
    cfg: Any  # runner.BenchConfig
    rate_rps: float | None = None  # the offered rate of a sweep point


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
    from llmplan.report.runner import simulate_once

    if sink is None and _QUEUE is not None:
        sink = lambda lb, d, t: _QUEUE.put((lb, d, t))  # noqa: E731
    result, sim_cfg = simulate_once(
        job.workload, job.cluster, job.cfg, job.policy, _throttled(job.label, sink)
    )
    return compute_metrics(result, job.workload, warmup_s=getattr(job.cfg, "warmup_s", 0.0)), sim_cfg


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
