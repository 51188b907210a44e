"""The comparison's systems on the live built-in engine: each system as a real deployment.

``run_live_system("distserve", workload)`` starts ``llmplan serve --instances 2 ...`` (the
front end and two built-in backends with dummy weights, one process each, on 127.0.0.1),
replays ``workload`` against it open loop (:func:`llmplan.loadgen.replay`), scrapes the
backends' and the front end's ``/metrics`` and stops the deployment.

Each system is the one :mod:`llmplan.bench.systems` defines (the simulator builds from the same
definition); :func:`serve_argv` translates it into ``llmplan serve`` flags: the layout into
``--instances 2`` (colocated) or ``--pd 1:1``, the router into ``--router``, admission into
``--admission``, the shared store into ``--kv-store``, and ``banaserve-workers`` into one
``--workers 2 --migration-controller`` instance. What the live engine cannot realise on CPU
(:func:`llmplan.bench.systems.live_gaps`: the P:D hand-off goes through the store; a P:D
deployment runs no controller) is kept in ``LiveSystemRun.gaps`` and in report.json. Each run
also records what it deployed (``LiveSystemRun.deployment``, from GET /v1/deployment).

Load per backend is measured three ways: requests dispatched to it (front end), tokens it
pushed through the model (prompt tokens not served by the store, plus generated tokens), and
the time-mean of requests inside its engine (running + waiting, sampled every 0.5 s). For
``banaserve-workers`` the load that can be uneven is each worker's compute time
(``llmplan_worker_busy_seconds``), reported in place of tokens.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from llmplan.bench.systems import REGISTRY, SystemDef, get_system, live_gaps
from llmplan.errors import LlmplanError
from llmplan.metrics.types import RunResult
from llmplan.workload.types import Workload

if TYPE_CHECKING:
    from llmplan.bench.config import BenchConfig, OnProgress
    from llmplan.report.model import BenchReport

# Every system the live harness deploys (the registry's), by name.
LIVE_SYSTEMS: dict[str, SystemDef] = dict(REGISTRY)
# Systems whose one instance spans worker processes instead of a front end over two backends.
WORKER_SYSTEMS = tuple(n for n, d in REGISTRY.items() if d.layout == "workers")


@dataclass(slots=True)
class LiveConfig:
    model: str = "llama-tiny"  # dummy-weight catalog model
    threads: int = 1  # torch threads per backend
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 512
    num_kv_blocks: int = 1024
    timeout_s: float = 300.0  # per request
    start_timeout_s: float = 300.0
    time_scale: float = 1.0
    seed: int = 0


@dataclass(slots=True)
class LiveSystemRun:
    system: str
    result: RunResult
    routed: dict[str, float]  # dispatches per backend (front end)
    computed_tokens: dict[str, float]  # tokens each backend pushed through the model (workers: busy s)
    queue_mean: dict[str, float]  # time-mean running + waiting per backend
    store_hit_tokens: float
    pd_handoffs: float
    pd_failures: float
    wall_s: float
    loadavg: tuple[float, float]  # 1-minute load average before and after the replay
    argv: list[str] = field(default_factory=list)
    # What the deployment reported at GET /v1/deployment (llmplan.deployment), None if nothing.
    deployment: dict | None = None
    # What of the system's definition (llmplan.bench.systems) the live engine did not realise.
    gaps: list[str] = field(default_factory=list)
    migrations: float = 0.0  # layer migrations the controller executed (banaserve-workers)
    offloads: float = 0.0  # attention offloads the controller executed (banaserve-workers)

    def imbalance(self) -> dict[str, float]:
        """max/mean over the backends of each load measure (1.0 = even)."""
        return {
            "routed": max_mean(self.routed),
            "tokens": max_mean(self.computed_tokens),
            "queue": max_mean(self.queue_mean),
        }


def max_mean(values: dict[str, float]) -> float:
    vals = list(values.values())
    mean = sum(vals) / len(vals) if vals else 0.0
    return max(vals) / mean if mean > 0 else math.nan


def _metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets)."""
    pat = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$"
    return sum(float(v) for v in re.findall(pat, text, re.M))


def _metric_by(text: str, name: str, label: str) -> dict[str, float]:
    pat = rf'^{re.escape(name)}\{{[^}}]*{label}="([^"]+)"[^}}]*\}} ([0-9.eE+-]+)$'
    return {k: float(v) for k, v in re.findall(pat, text, re.M)}


def _free_port_pair() -> tuple[int, int]:
    """A free port for the front end and the first of two consecutive free backend ports."""
    for _ in range(50):
        with socket.socket() as a, socket.socket() as b, socket.socket() as c:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            first = b.getsockname()[1]
            try:
                c.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
            return a.getsockname()[1], first
    raise LlmplanError("found no two consecutive free ports on 127.0.0.1; free some ports and retry")


class _QueueSampler:
    """Time-mean of requests inside each backend (running + waiting), from their /metrics."""

    def __init__(self, urls: dict[str, str], interval_s: float = 0.5) -> None:
        self.urls, self.interval_s = urls, interval_s
        self.sums: dict[str, float] = dict.fromkeys(urls, 0.0)
        self.n = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2.0, trust_env=False) as c:
            while not self._stop.wait(self.interval_s):
                for name, url in self.urls.items():
                    with contextlib.suppress(httpx.HTTPError):
                        t = c.get(url + "/metrics").text
                        running = _metric_sum(t, "llmplan_requests_running")
                        self.sums[name] += running + _metric_sum(t, "llmplan_requests_waiting")
                self.n += 1

    def __enter__(self) -> _QueueSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def serve_argv(system: str, cfg: LiveConfig, port: int, base_port: int, workdir: Path) -> list[str]:
    """The ``llmplan serve`` command line of ``system``'s deployment."""
    defn = get_system(system)
    system = defn.name
    if system in WORKER_SYSTEMS:
        return [
            sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", cfg.model,
            "--port", str(port), "--workers", "2", "--migration-controller", "--threads", str(cfg.threads),
            "--max-num-seqs", str(cfg.max_num_seqs), "--max-num-batched-tokens",
            str(cfg.max_num_batched_tokens), "--num-kv-blocks", str(cfg.num_kv_blocks), "--seed",
            str(cfg.seed),
        ]  # fmt: skip
    argv = [
        sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", cfg.model,
        "--instances", "2", "--port", str(port), "--base-port", str(base_port), "--router", defn.router,
        "--threads", str(cfg.threads), "--max-num-seqs", str(cfg.max_num_seqs),
        "--max-num-batched-tokens", str(cfg.max_num_batched_tokens), "--num-kv-blocks",
        str(cfg.num_kv_blocks), "--log-dir", str(workdir / "logs"), "--max-restarts", "0",
        "--admission", defn.admission, "--seed", str(cfg.seed),
    ]  # fmt: skip
    if defn.layout == "pd":
        argv += ["--pd", "1:1"]
    if defn.kv_store or defn.layout == "pd":
        # The P:D hand-off needs the store. A fresh store per run: one warmed by an earlier
        # run's identical prompts would turn every prompt into a hit.
        argv += ["--kv-store", str(workdir / "store")]
    return argv


def run_live_system(
    system: str,
    workload: Workload,
    workdir: Path,
    cfg: LiveConfig | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> LiveSystemRun:
    """Deploy ``system``, replay ``workload`` against it, measure, stop. ``workdir`` (created)
    holds the deployment's log, backend logs and KV store."""
    from llmplan.loadgen import replay

    cfg = cfg or LiveConfig()
    workdir.mkdir(parents=True, exist_ok=True)
    port, first = _free_port_pair()
    argv = serve_argv(system, cfg, port, first, workdir)
    defn = get_system(system)
    system = defn.name
    names = ["prefill0", "decode0"] if defn.layout == "pd" else ["engine0", "engine1"]
    backends = {n: f"http://127.0.0.1:{first + i}" for i, n in enumerate(names)}
    url = f"http://127.0.0.1:{port}"
    if system in WORKER_SYSTEMS:
        backends = {"instance": url}
    with open(workdir / "serve.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(proc, url, cfg.start_timeout_s, system, workdir)
            deployment = _deployment(url)
            before = {n: httpx.get(u + "/metrics").text for n, u in backends.items()}
            load0 = os.getloadavg()[0]
            t0 = time.monotonic()
            with _QueueSampler(backends) as sampler:
                result = replay(
                    url, workload, time_scale=cfg.time_scale, seed=cfg.seed, timeout_s=cfg.timeout_s,
                    progress=progress,
                )  # fmt: skip
            wall = time.monotonic() - t0
            load1 = os.getloadavg()[0]
            after = {n: httpx.get(u + "/metrics").text for n, u in backends.items()}
            fe = httpx.get(url + "/metrics").text
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def delta(name: str, metric: str) -> float:
        return _metric_sum(after[name], metric) - _metric_sum(before[name], metric)

    # Tokens through the model: prompt tokens not served by the store, plus generated tokens
    # (the P/D prefill instance generates one per request).
    computed = {
        n: delta(n, "llmplan_prompt_tokens_total")
        - delta(n, "llmplan_kvstore_hit_tokens_total")
        + delta(n, "llmplan_generation_tokens_total")
        for n in backends
    }
    routed = _metric_by(fe, "llmplan_frontend_routed_total", "backend")
    queue = sampler.means()
    migrations = offloads = 0.0
    if system in WORKER_SYSTEMS:
        # One instance: the load that can be uneven is its workers' compute time.
        busy0 = _metric_by(before["instance"], "llmplan_worker_busy_seconds_total", "worker")
        busy1 = _metric_by(after["instance"], "llmplan_worker_busy_seconds_total", "worker")
        computed = {f"worker{w}": busy1[w] - busy0.get(w, 0.0) for w in sorted(busy1)}
        routed = {}
        queue = {}
        migrations, offloads = (
            _metric_sum(after["instance"], name) - _metric_sum(before["instance"], name)
            for name in ("llmplan_layer_migrations_total", "llmplan_attention_offloads_total")
        )
    return LiveSystemRun(
        system=system,
        result=result,
        routed={n: routed.get(n, 0.0) for n in backends} if system not in WORKER_SYSTEMS else {},
        computed_tokens=computed,
        queue_mean=queue,
        migrations=migrations,
        offloads=offloads,
        store_hit_tokens=sum(delta(n, "llmplan_kvstore_hit_tokens_total") for n in backends),
        pd_handoffs=_metric_sum(fe, "llmplan_frontend_pd_handoffs_total"),
        pd_failures=_metric_sum(fe, "llmplan_frontend_pd_failures_total"),
        wall_s=wall,
        loadavg=(load0, load1),
        argv=argv,
        deployment=deployment,
        gaps=live_gaps(defn),
    )


def _deployment(url: str) -> dict | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        resp = httpx.get(url + "/v1/deployment", timeout=30)
        if resp.status_code == 200:
            return resp.json()
    return None


def _wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float, system: str, workdir: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            tail = (workdir / "serve.log").read_text(errors="replace").strip().splitlines()[-1:]
            raise LlmplanError(
                f"{system}: llmplan serve exited with code {proc.returncode}; log {workdir}/serve.log: "
                + " | ".join(tail)
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise LlmplanError(
                f"{system}: front end not healthy in {timeout_s:.0f}s; see {workdir}/serve.log"
            )
        time.sleep(0.3)


def scale_lengths(
    workload: Workload,
    prompt_scale: float,
    output_scale: float,
    *,
    max_prompt: int = 1024,
    max_output: int = 128,
) -> Workload:
    """``workload`` with token lengths scaled down to what a small CPU model carries (each
    length times its scale, at least 1, at most the cap); arrivals and SLOs unchanged."""
    from dataclasses import replace

    if prompt_scale <= 0 or output_scale <= 0:
        raise LlmplanError(f"length scales must be positive, got {prompt_scale} and {output_scale}")

    def clip(n: float, cap: int) -> int:
        return int(min(max(round(n), 1), cap))

    reqs = [
        replace(
            r,
            prompt_tokens=clip(r.prompt_tokens * prompt_scale, max_prompt),
            output_tokens=clip(r.output_tokens * output_scale, max_output),
        )
        for r in workload.requests
    ]
    scaling = {
        "prompt": prompt_scale,
        "output": output_scale,
        "max_prompt": max_prompt,
        "max_output": max_output,
    }
    meta = {**workload.meta, "length_scale": scaling}
    return replace(workload, requests=reqs, meta=meta)


def load_table(runs: list[LiveSystemRun]) -> str:
    """Markdown: per system, the load on each backend and the max/mean imbalance."""
    rows = [
        "| system | backend | dispatched | tokens computed (workers: busy s) | mean in engine |",
        "|---|---|---|---|---|",
    ]
    for r in runs:
        imb = r.imbalance()
        for b in r.computed_tokens:
            rows.append(
                f"| {r.system} | {b} | {r.routed.get(b, math.nan):.0f} | {r.computed_tokens[b]:.1f} | "
                f"{r.queue_mean.get(b, math.nan):.2f} |"
            )
        rows.append(
            f"| {r.system} | max/mean | {imb['routed']:.2f} | {imb['tokens']:.2f} | {imb['queue']:.2f} |"
        )
    notes = [
        f"- {r.system}: store hit tokens {r.store_hit_tokens:.0f}, P/D hand-offs {r.pd_handoffs:.0f} "
        f"(failed {r.pd_failures:.0f}), layer migrations {r.migrations:.0f}, attention offloads "
        f"{r.offloads:.0f}, replay {r.wall_s:.0f} s, "
        f"load average {r.loadavg[0]:.1f} -> {r.loadavg[1]:.1f}"
        for r in runs
    ]
    return "\n".join(rows + [""] + notes)


def run_live_comparison(
    cfg: BenchConfig, wl: Workload, model: str, scales: list[float], on_progress: OnProgress
) -> tuple[BenchReport, str]:
    """``llmplan bench --compare ... --live``: each system of ``cfg.policies`` as a real deployment,
    one after another, in one report (load per backend and what each did not realise in ``extra``)."""
    import datetime as dt
    import tempfile

    from llmplan import __version__
    from llmplan.bench.runner import live_workload_info
    from llmplan.metrics import compute_metrics
    from llmplan.report import BenchReport

    if len(scales) != 2:
        raise LlmplanError(f"--live-scale wants PROMPT,OUTPUT scales, e.g. 0.5,0.5; got {scales}")
    wl = scale_lengths(wl, scales[0], scales[1])
    live_cfg = LiveConfig(model=model, seed=cfg.seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="llmplan-live-") as tmp:
        for system in cfg.policies:
            runs.append(
                run_live_system(
                    system,
                    wl,
                    Path(tmp) / system,
                    live_cfg,
                    progress=lambda d, t, s=system: on_progress(s, d, t),
                )  # fmt: skip
            )
    loads = load_table(runs)
    report = BenchReport(
        runs={r.system: compute_metrics(r.result, wl) for r in runs},
        config={"bench": cfg.to_dict(), "live": {"model": model, "length_scale": scales,
                                                 "commands": {r.system: r.argv for r in runs}},
                # What each deployment reported it runs (GET /v1/deployment of its front end).
                "deployments": {r.system: r.deployment for r in runs},
                # Each system's one definition (llmplan.bench.systems) and what live did not realise.
                "systems": {r.system: {"definition": get_system(r.system).to_dict(), "not_realised": r.gaps}
                            for r in runs}},
        workload=live_workload_info(wl, 1.0),
        seed=cfg.seed,
        version=__version__,
        created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=cfg.command,
    )  # fmt: skip
    report.extra["Live deployments: load per backend"] = loads
    gaps = [f"- {r.system}: {g}" for r in runs for g in r.gaps]
    if gaps:
        report.extra["Live deployments: what they do not realise of their system's definition"] = "\n".join(
            gaps
        )
    return report, loads
