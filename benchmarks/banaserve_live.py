"""Live vLLM-style vs DistServe-style vs BanaServe-style deployments of the built-in CPU engine.

The simulated comparison (``llmplan bench --compare vllm,distserve,banaserve``) prices 13B
models on A100s; this script runs the three architectures for real, at the scale a small CPU
machine carries: each system is one ``llmplan serve --instances 2`` deployment on 127.0.0.1
(two built-in backends with dummy weights, one torch thread each, behind llmplan's front end),
and the same slice of the Azure LLM inference trace 2023 (conversation) is replayed against
each, open loop, by ``llmplan.loadgen.replay``:

* ``vllm``      -- two colocated instances, continuous batching, least-loaded router;
* ``distserve`` -- static 1:1 P/D (``--pd 1:1``): the prefill instance writes the prompt's KV to
                   the global store, the decode instance loads it and decodes;
* ``banaserve`` -- two colocated instances sharing the global KV store (``--kv-store``), the
                   BanaServe router (load-aware, Algorithm 4-2, over the store).

Token lengths are scaled down (``--prompt-scale``, ``--output-scale``, caps) and arrivals are
rescaled to each of ``--rates`` requests/s; the script prints the scaling it used. Per system it prints
throughput, goodput (completed requests meeting all their SLOs per second, the definition of
``llmplan bench``), TTFT/TPOT p50/p90, failures, and the max/mean load over the two backends
(dispatched requests, tokens computed, time-mean requests in the engine), plus the machine's
load average during the run. ``--calibration PROFILE`` (from ``llmplan calibrate``) adds the
simulator's prediction for the same workload and configuration.

    python benchmarks/banaserve_live.py --requests 60 --rates 2,4,8 --calibration tiny.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np

SYSTEMS = {
    # name: (router, --pd split or None, shares the global KV store)
    "vllm": ("least-loaded", None, False),
    "distserve": ("least-loaded", "1:1", True),
    "banaserve": ("banaserve", None, True),
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric_sum(text: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets)."""
    return sum(
        float(v) for v in re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", text, re.M)
    )


def _metric_by(text: str, name: str, label: str) -> dict[str, float]:
    pat = rf'^{re.escape(name)}\{{[^}}]*{label}="([^"]+)"[^}}]*\}} ([0-9.eE+-]+)$'
    return {k: float(v) for k, v in re.findall(pat, text, re.M)}


def workload(args: argparse.Namespace, rate: float):
    """The Azure conv slice, lengths scaled for the CPU, arrivals rescaled to ``rate`` req/s."""
    from llmplan.workload.loader import load_workload
    from llmplan.workload.shaping import offered_rate, rescale_rate
    from llmplan.workload.slo import assign_slos

    wl = load_workload("azure-conv", max_requests=args.requests)
    raw_p = np.array([r.prompt_tokens for r in wl.requests])
    raw_o = np.array([r.output_tokens for r in wl.requests])
    reqs = [
        replace(
            r,
            prompt_tokens=int(min(max(round(r.prompt_tokens * args.prompt_scale), 1), args.max_prompt)),
            output_tokens=int(min(max(round(r.output_tokens * args.output_scale), 1), args.max_output)),
        )
        for r in wl.requests
    ]
    wl = replace(wl, requests=reqs)
    wl = rescale_rate(wl, rate / offered_rate(wl))
    assign_slos(wl, args.slo)
    p = np.array([r.prompt_tokens for r in wl.requests])
    o = np.array([r.output_tokens for r in wl.requests])
    scaling = (
        f"Azure conv 2023, first {len(reqs)} requests; prompt tokens x{args.prompt_scale:g} "
        f"(cap {args.max_prompt}): mean {raw_p.mean():.0f} -> {p.mean():.0f}, output tokens "
        f"x{args.output_scale:g} (cap {args.max_output}): mean {raw_o.mean():.0f} -> {o.mean():.0f}; "
        f"SLO {args.slo}"
    )
    return wl, scaling


@dataclass
class Sampler:
    """Time-mean of requests inside each backend (running + waiting), from their /metrics."""

    urls: dict[str, str]
    interval_s: float = 0.5
    sums: dict[str, float] = field(default_factory=dict)
    n: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=2.0, trust_env=False) as c:
            while not self._stop.wait(self.interval_s):
                for name, url in self.urls.items():
                    with contextlib.suppress(httpx.HTTPError):
                        t = c.get(url + "/metrics").text
                        q = _metric_sum(t, "llmplan_requests_running") + _metric_sum(
                            t, "llmplan_requests_waiting"
                        )
                        self.sums[name] = self.sums.get(name, 0.0) + q
                self.n += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.n, 1) for k, v in self.sums.items()}


def _max_mean(values: dict[str, float]) -> float:
    vals = list(values.values())
    mean = sum(vals) / len(vals) if vals else 0.0
    return max(vals) / mean if mean > 0 else math.nan


def _backend_names(system: str) -> list[str]:
    return ["prefill0", "decode0"] if SYSTEMS[system][1] else ["engine0", "engine1"]


def run_system(system: str, rate: float, wl, args: argparse.Namespace, work: Path) -> dict:
    from llmplan.loadgen import replay
    from llmplan.metrics import compute_metrics

    router, pd, store = SYSTEMS[system]
    port, first = _port(), _port()
    ports = [first, first + 1]  # the deployment takes consecutive ports from --base-port
    argv = [
        sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", args.model,
        "--instances", "2", "--port", str(port), "--base-port", str(ports[0]), "--router", router,
        "--threads", "1", "--max-num-seqs", str(args.max_num_seqs), "--max-num-batched-tokens",
        str(args.max_num_batched_tokens), "--num-kv-blocks", str(args.num_kv_blocks),
        "--log-dir", str(work / f"logs-{system}-{rate:g}"), "--max-restarts", "0", "--admission", "fcfs",
    ]  # fmt: skip
    if pd:
        argv += ["--pd", pd]
    if store:
        # A fresh store per run: a store warmed by the previous rate's identical prompts would
        # turn every prompt into a hit.
        argv += ["--kv-store", str(work / f"store-{system}-{rate:g}")]
    log = open(work / f"{system}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    backends = dict(zip(_backend_names(system), (f"http://127.0.0.1:{p}" for p in ports), strict=True))
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{system}: llmplan serve exited {proc.returncode}; see {work}/{system}.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{system}: front end not healthy in 300 s; see {work}/{system}.log")
            time.sleep(0.5)
        before = {n: httpx.get(u + "/metrics").text for n, u in backends.items()}
        sampler = Sampler(backends)
        t = threading.Thread(target=sampler.run, daemon=True)
        load0 = os.getloadavg()[0]
        t.start()
        t0 = time.monotonic()
        result = replay(url, wl, seed=args.seed, timeout_s=args.timeout)
        wall = time.monotonic() - t0
        sampler._stop.set()
        t.join()
        load1 = os.getloadavg()[0]
        after = {n: httpx.get(u + "/metrics").text for n, u in backends.items()}
        fe = httpx.get(url + "/metrics").text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()

    s = compute_metrics(result, wl).summary
    lat = s["latency"]

    def delta(name: str, metric: str) -> float:
        return _metric_sum(after[name], metric) - _metric_sum(before[name], metric)

    # Tokens each backend pushed through the model: prompt tokens not served by the store, plus
    # generated tokens (the P/D prefill instance generates one per request).
    computed = {
        n: delta(n, "llmplan_prompt_tokens_total")
        - delta(n, "llmplan_kvstore_hit_tokens_total")
        + delta(n, "llmplan_generation_tokens_total")
        for n in backends
    }
    routed = _metric_by(fe, "llmplan_frontend_routed_total", "backend")
    return {
        "system": system,
        "rate": rate,
        "completed": s["completed"],
        "failed": s["failed"] + s["rejected"],
        "req_s": s["throughput_rps"],
        "out_tok_s": s["output_tokens_per_s"],
        "goodput_rps": s["goodput_rps"],
        "attainment": s["attainment"]["all"],
        "ttft_p50": lat["ttft_s"]["p50"],
        "ttft_p90": lat["ttft_s"]["p90"],
        "tpot_p50": lat["tpot_s"]["p50"],
        "tpot_p90": lat["tpot_s"]["p90"],
        "routed": routed,
        "computed_tokens": computed,
        "queue_mean": sampler.means(),
        "load_routed": _max_mean({n: routed.get(n, 0.0) for n in backends}),
        "load_tokens": _max_mean(computed),
        "load_queue": _max_mean(sampler.means()),
        "store_hit_tokens": sum(delta(n, "llmplan_kvstore_hit_tokens_total") for n in backends),
        "pd_handoffs": _metric_sum(fe, "llmplan_frontend_pd_handoffs_total"),
        "pd_failures": _metric_sum(fe, "llmplan_frontend_pd_failures_total"),
        "wall_s": wall,
        "loadavg": (load0, load1),
    }


def simulate(system: str, wl, args: argparse.Namespace) -> dict:
    """The simulator on the same workload: same instances, policy, router, P:D split, priced by
    the calibration profile; the store hand-off is a local disk copy (fast link)."""
    from llmplan.metrics import compute_metrics
    from llmplan.runtime.calibration import load_profile
    from llmplan.runtime.sim import SimConfig
    from llmplan.runtime.sim import simulate as run_sim

    router, pd, _ = SYSTEMS[system]
    cfg = SimConfig(
        instances=2, policy="fcfs", router=router, model=args.model, cost=load_profile(args.calibration),
        disaggregation=(1, 1) if pd else None, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, chunked_prefill=True,
        num_blocks=args.num_kv_blocks, record_token_times=True, kv_link_gbps=1.0,
    )  # fmt: skip
    s = compute_metrics(run_sim(wl, cfg), wl).summary
    lat = s["latency"]
    return {
        "out_tok_s": s["output_tokens_per_s"], "goodput_rps": s["goodput_rps"],
        "ttft_p50": lat["ttft_s"]["p50"], "tpot_p50": lat["tpot_s"]["p50"],
    }  # fmt: skip


def _f(x: float | None, spec: str = ".2f", scale: float = 1.0) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x * scale, spec)


def print_table(rows: list[dict], sims: dict[tuple[float, str], dict]) -> None:
    head = (
        "| rate req/s | system | done/failed | req/s | out tok/s | goodput req/s | SLO att. | "
        "TTFT p50/p90 s | TPOT p50/p90 ms | load max/mean: routed, tokens, queue | loadavg 1m |"
    )
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for r in rows:
        cells = [
            f"{r['rate']:g}",
            r["system"],
            f"{r['completed']}/{r['failed']}",
            _f(r["req_s"], ".3f"),
            _f(r["out_tok_s"], ".1f"),
            _f(r["goodput_rps"], ".3f"),
            _f(r["attainment"], ".0%"),
            f"{_f(r['ttft_p50'])}/{_f(r['ttft_p90'])}",
            f"{_f(r['tpot_p50'], '.0f', 1e3)}/{_f(r['tpot_p90'], '.0f', 1e3)}",
            f"{_f(r['load_routed'])}, {_f(r['load_tokens'])}, {_f(r['load_queue'])}",
            f"{r['loadavg'][0]:.1f} -> {r['loadavg'][1]:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")
    by = {(r["rate"], r["system"]): r for r in rows}
    for rate in sorted({r["rate"] for r in rows}):
        bana = by.get((rate, "banaserve"))
        for other in ("vllm", "distserve"):
            o = by.get((rate, other))
            if bana and o and o["out_tok_s"]:
                ratio = bana["out_tok_s"] / o["out_tok_s"]
                line = f"{rate:g} req/s: banaserve / {other}: throughput x{ratio:.2f}"
                if o["goodput_rps"]:
                    line += f", goodput x{bana['goodput_rps'] / o['goodput_rps']:.2f}"
                print(line)
    for r in rows:
        extra = f"store hit tokens {r['store_hit_tokens']:.0f}"
        if r["pd_handoffs"] or r["pd_failures"]:
            extra += f", P/D hand-offs {r['pd_handoffs']:.0f}, hand-off failures {r['pd_failures']:.0f}"
        tokens = {k: round(v) for k, v in r["computed_tokens"].items()}
        queue = {k: round(v, 2) for k, v in r["queue_mean"].items()}
        print(
            f"{r['rate']:g} req/s {r['system']}: routed {r['routed']}, tokens computed {tokens}, "
            f"mean in engine {queue}; {extra}; wall {r['wall_s']:.0f} s"
        )
    if sims:
        print("\nsimulator (calibration profile), same workload and configuration:")
        print(
            "| rate req/s | system | out tok/s sim/live | goodput sim/live | TTFT p50 sim/live s "
            "| TPOT p50 sim/live ms |"
        )
        print("|---|---|---|---|---|---|")
        for r in rows:
            p = sims.get((r["rate"], r["system"]))
            if p:
                cells = [
                    f"{r['rate']:g}",
                    r["system"],
                    f"{_f(p['out_tok_s'], '.1f')}/{_f(r['out_tok_s'], '.1f')}",
                    f"{_f(p['goodput_rps'], '.3f')}/{_f(r['goodput_rps'], '.3f')}",
                    f"{_f(p['ttft_p50'])}/{_f(r['ttft_p50'])}",
                    f"{_f(p['tpot_p50'], '.0f', 1e3)}/{_f(r['tpot_p50'], '.0f', 1e3)}",
                ]
                print("| " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="vllm,distserve,banaserve")
    ap.add_argument("--model", default="llama-tiny", help="dummy-weight catalog model")
    ap.add_argument("--requests", type=int, default=60, help="first N requests of the Azure conv trace")
    ap.add_argument(
        "--rates", default="2,4,8", help="offered requests/s (arrivals rescaled), comma-separated"
    )
    ap.add_argument("--prompt-scale", type=float, default=0.25)
    ap.add_argument("--output-scale", type=float, default=0.25)
    ap.add_argument("--max-prompt", type=int, default=1024)
    ap.add_argument("--max-output", type=int, default=128)
    ap.add_argument("--slo", default="fixed:ttft=2,tpot=0.1,e2e=0", help="per-request SLOs for goodput")
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--max-num-batched-tokens", type=int, default=512)
    ap.add_argument("--num-kv-blocks", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibration", help="profile from `llmplan calibrate` for the simulator's prediction")
    ap.add_argument("--json", dest="json_out", help="also write the rows to this JSON file")
    args = ap.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in systems if s not in SYSTEMS]
    if bad:
        raise SystemExit(f"unknown system(s) {bad}; choose from {', '.join(SYSTEMS)}")
    rates = [float(x) for x in args.rates.split(",") if x.strip()]
    scaling = workload(args, rates[0])[1]
    print(scaling)
    print(
        f"{args.model} (dummy weights), 2 backends x 1 torch thread, max-num-seqs {args.max_num_seqs}, "
        f"max-num-batched-tokens {args.max_num_batched_tokens}, FCFS; {os.cpu_count()} CPUs"
    )
    rows, sims = [], {}
    with tempfile.TemporaryDirectory(prefix="banaserve-live-") as tmp:
        for rate in rates:
            wl = workload(args, rate)[0]
            for system in systems:
                print(f"running {system} at {rate:g} req/s ...", file=sys.stderr, flush=True)
                rows.append(run_system(system, rate, wl, args, Path(tmp)))
                if args.calibration:
                    sims[(rate, system)] = simulate(system, wl, args)
    print_table(rows, sims)
    if args.json_out:
        sim = [{"rate": k[0], "system": k[1], **v} for k, v in sims.items()]
        Path(args.json_out).write_text(json.dumps({"scaling": scaling, "rows": rows, "sim": sim}, indent=1))


if __name__ == "__main__":
    main()
