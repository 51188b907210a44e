"""Routers where prefix caching matters: hit rate against load balance, simulated.

Each router places the same requests on ``--instances`` colocated llama-2-13b replicas (one
A100-80GB each, continuous FCFS, every instance with the GPU prefix cache of
``llmplan.runtime.core.blocks``), on two workloads with prefix structure and exact token ids:

* ``sharegpt-multiturn`` -- ShareGPT conversations as sessions (each turn's prompt is the whole
  conversation so far), and
* ``shared-prefix``      -- SGLang's generated-shared-prefix shape (system prompts shared by groups).

Per router: prefix-cache hit rate (prompt tokens served from the cache / looked up), TTFT p50
and p99, goodput (requests meeting every SLO per second, proportional SLOs), and the
max/mean instance load, as requests routed per instance and as busy time per instance.
``banaserve`` here is BanaServe's load-aware router alone on colocated instances (no P:D split,
no migration), so the columns compare routing only. Target: max/mean routed <= 1.2 while
keeping >= 90% of the prefix-aware router's hit rate.

    python benchmarks/routers_prefix.py                    # both workloads, 5 routers
    python benchmarks/routers_prefix.py --n 800 --instances 4
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

ROUTERS = ("round-robin", "least-loaded", "prefix-aware", "banaserve", "prefix-bounded")


def _loads(result, names: list[str]) -> tuple[float, float]:
    """(max/mean requests routed, max/mean busy seconds) over the instances."""
    routed = Counter(r.instance for r in result.records if r.instance is not None)
    counts = [routed.get(n, 0) for n in names]
    busy: dict[str, float] = {n: 0.0 for n in names}
    last: dict[str, float] = {}
    for s in result.samples:
        if s.instance in busy:
            t0 = last.get(s.instance)
            if t0 is not None:
                busy[s.instance] += s.busy_frac * (s.t_s - t0)
            last[s.instance] = s.t_s
    b = list(busy.values())

    def mom(x: list[float]) -> float:
        m = sum(x) / len(x)
        return max(x) / m if m > 0 else float("nan")

    return mom([float(c) for c in counts]), mom(b)


def run(trace: str, n: int, instances: int, routers: tuple[str, ...]) -> list[dict]:
    from llmplan.metrics import compute_metrics
    from llmplan.runtime.sim import SimConfig, simulate
    from llmplan.runtime.sim.cluster import build_instances
    from llmplan.workload import load_workload

    wl = load_workload(trace, max_requests=n, slo="proportional", seed=0)
    rows = []
    for name in routers:
        sc = SimConfig(instances=instances, router=name, chunked_prefill=True, seed=0)
        names = [s.name for s in build_instances(sc)]
        t = time.perf_counter()
        res = simulate(wl, sc)
        m = compute_metrics(res, wl).summary
        routed, busy = _loads(res, names)
        rows.append({
            "router": name,
            "hit_rate": (m.get("prefix_cache") or {}).get("hit_rate", 0.0),
            "ttft_p50": m["latency"]["ttft_s"]["p50"],
            "ttft_p99": m["latency"]["ttft_s"]["p99"],
            "goodput": m["goodput_rps"],
            "attainment": m["attainment"]["all"],
            "routed_max_mean": routed,
            "busy_max_mean": busy,
            "wall_s": time.perf_counter() - t,
        })  # fmt: skip
    return rows


def table(trace: str, wl_note: str, rows: list[dict]) -> str:
    ref = next((r["hit_rate"] for r in rows if r["router"] == "prefix-aware"), None)
    out = [f"{trace} ({wl_note})", "",
           "| router | hit rate | vs prefix-aware | TTFT p50 | TTFT p99 | goodput req/s | SLO att. | "
           "max/mean routed | max/mean busy | target |",
           "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        rel = r["hit_rate"] / ref if ref else float("nan")
        ok = r["routed_max_mean"] <= 1.2 and rel >= 0.9
        out.append(
            f"| {r['router']} | {r['hit_rate']:.1%} | {rel:.0%} | {r['ttft_p50'] * 1e3:.0f} ms | "
            f"{r['ttft_p99']:.2f} s | {r['goodput']:.2f} | {r['attainment']:.1%} | "
            f"{r['routed_max_mean']:.2f} | {r['busy_max_mean']:.2f} | {'met' if ok else '–'} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="requests per workload")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--multiturn", default="sharegpt-multiturn:rate=4,think=5")
    ap.add_argument("--shared", default="shared-prefix:groups=8,per_group=250,system_len=2048,"
                    "question_len=128,output_len=256,rate=9")  # fmt: skip
    ap.add_argument("--routers", default=",".join(ROUTERS))
    a = ap.parse_args()
    routers = tuple(x.strip() for x in a.routers.split(",") if x.strip())
    for trace in (a.multiturn, a.shared):
        t = time.perf_counter()
        rows = run(trace, a.n, a.instances, routers)
        note = f"{a.n} requests, {a.instances} x llama-2-13b on A100-80GB, {time.perf_counter() - t:.0f} s"
        print(table(trace, note, rows))
        print()


if __name__ == "__main__":
    main()
