"""Simulator speed on the Azure LLM inference trace (conv, 19,366 requests).

Simulates 2k / 8k / all requests on an 8-instance colocated cluster (llama-2-13b on one
A100-80GB each, the planner's roofline cost, continuous FCFS, round-robin) and prints
simulated requests per wall-second and peak memory. Target: the full trace in <= 10 s,
peak RSS <= 2 GiB, cost linear in requests.

    LLMPLAN_DATA_DIR=/work/shared/datasets python benchmarks/sim_speed.py [--policy fcfs] [--instances 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd

from llmplan.runtime.sim import SimConfig, simulate
from llmplan.workload.types import RequestSpec, Workload


def load_conv(limit: int | None = None) -> Workload:
    root = Path(os.environ.get("LLMPLAN_DATA_DIR", "../shared/datasets"))
    path = root / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv"
    if not path.exists():
        sys.exit(f"trace not found at {path}; set LLMPLAN_DATA_DIR to the folder holding azure-llm-2023/")
    df = pd.read_csv(path, nrows=limit)
    ts = pd.to_datetime(df["TIMESTAMP"])
    t = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    reqs = [
        RequestSpec(rid=i, arrival_s=float(t[i]), prompt_tokens=int(p), output_tokens=max(1, int(o)))
        for i, (p, o) in enumerate(zip(df["ContextTokens"], df["GeneratedTokens"], strict=True))
    ]
    return Workload(f"azure-conv[:{len(reqs)}]", reqs, source=str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="fcfs")
    ap.add_argument("--router", default="round-robin")
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--sizes", default="2000,8000,0", help="request counts; 0 = the whole trace")
    ap.add_argument("--stepping", action="store_true", help="also time 2k requests without decode runs")
    ap.add_argument("--token-times", action="store_true", help="record every token's time (for ITL)")
    args = ap.parse_args()
    full = load_conv()
    print(f"trace: {full.source} ({len(full)} requests, {full.requests[-1].arrival_s:.0f} s)")
    print(
        f"cluster: {args.instances} x llama-2-13b on A100-SXM-80GB, "
        f"policy={args.policy}, router={args.router}"
    )
    print("(cpu s = this process's CPU time: the wall time an idle core would take; on a shared machine")
    print(" wall s also counts time spent waiting for a core)")
    print(
        f"{'requests':>9} {'wall s':>8} {'cpu s':>7} {'req/wall-s':>11} {'req/cpu-s':>10} {'steps':>10} "
        f"{'decode runs':>11} {'sim end s':>9} {'completed':>9}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        wl = full if size == 0 or size >= len(full) else Workload("slice", full.requests[:size])
        cfg = SimConfig(
            instances=args.instances,
            policy=args.policy,
            router=args.router,
            record_token_times=args.token_times,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        res = simulate(wl, cfg)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        c = res.counters
        print(
            f"{len(wl):>9} {wall:>8.2f} {cpu:>7.2f} {len(wl) / wall:>11.0f} {len(wl) / cpu:>10.0f} "
            f"{int(c['steps']):>10} {int(c['decode_runs']):>11} {res.meta['sim_end_s']:>9.0f} "
            f"{int(c['completed']):>9}"
        )
    if args.stepping:
        # The same 2k requests stepped one iteration at a time (fast_forward=False): the
        # baseline the closed-form decode runs are measured against, with identical results.
        wl = Workload("slice", full.requests[:2000])
        times = []
        for ff in (True, False):
            cfg = SimConfig(instances=args.instances, policy=args.policy, router=args.router, fast_forward=ff)
            c0 = time.process_time()
            res = simulate(wl, cfg)
            times.append(time.process_time() - c0)
        print(
            f"2000 requests stepped one iteration at a time: {times[1]:.2f} cpu s vs {times[0]:.2f} "
            f"with decode runs ({times[1] / times[0]:.1f}x)"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
