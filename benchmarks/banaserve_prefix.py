"""Simulated BanaServe vs vLLM vs DistServe where the store and the router have work to do.

The Azure traces carry token counts only, so BanaServe's global KV store and prefix-aware routing
get no hits there (docs/banaserve.md). This harness runs the three systems of
:data:`llmplan.bench.systems.REGISTRY` (the same definitions ``llmplan bench --compare`` uses) on
the two workloads with exact token ids and prefix structure:

* ``sharegpt-multiturn`` -- ShareGPT conversations replayed as sessions (each turn's prompt is
  the whole conversation so far);
* ``shared-prefix``      -- SGLang's generated-shared-prefix shape (system prompts shared by groups).

Each system runs ``--repeat`` seeds (arrivals, think times, SLO draws) through
:func:`llmplan.bench.runner.run_bench`; the table is mean ± 95% t-interval per metric and the
paired difference of each system against vLLM, a **tie** when its interval contains 0
(:mod:`llmplan.report.repeats`). ``--scale`` multiplies the workload's arrival rate, so the
comparison can be made below and near saturation.

    python benchmarks/banaserve_prefix.py                      # both workloads, 3 seeds
    python benchmarks/banaserve_prefix.py --n 600 --repeat 3 --scale 1,3
"""

from __future__ import annotations

import argparse
import time

TRACES = {
    "sharegpt-multiturn": "sharegpt-multiturn:rate=4,think=5",
    "shared-prefix": (
        "shared-prefix:groups=8,per_group=250,system_len=2048,question_len=128,output_len=256,rate=9"
    ),
}
SYSTEMS = ("vllm", "distserve", "banaserve")


def run(trace: str, n: int, repeat: int, scale: float, systems: tuple[str, ...]) -> tuple[dict, float]:
    from llmplan.bench.config import BenchConfig
    from llmplan.bench.runner import run_bench

    cfg = BenchConfig(
        trace=trace, max_requests=n, rate_scale=scale, policies=list(systems), repeat=repeat, energy="off",
        record_token_times=False,
    )  # fmt: skip
    t = time.perf_counter()
    rep = run_bench(cfg, show_download_progress=False)
    return rep.repeats, time.perf_counter() - t


def main() -> None:
    from llmplan.report.repeats import markdown

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", default=",".join(TRACES), help="comma list of: " + ", ".join(TRACES))
    ap.add_argument("--n", type=int, default=800, help="requests per run (default 800)")
    ap.add_argument("--repeat", type=int, default=3, help="seeds per system (default 3, >= 2)")
    ap.add_argument("--scale", default="1", help="comma list of arrival-rate multipliers (default 1)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    args = ap.parse_args()
    if args.repeat < 2:
        ap.error("--repeat must be >= 2 (an interval needs two seeds)")
    systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    for name in args.traces.split(","):
        name = name.strip()
        if name not in TRACES:
            ap.error(f"unknown trace {name!r}; choose from {', '.join(TRACES)}")
        for scale in (float(x) for x in args.scale.split(",")):
            repeats, wall = run(TRACES[name], args.n, args.repeat, scale, systems)
            print(f"### {TRACES[name]} x{scale:g} ({args.n} requests, {wall:.0f} s)\n")
            lines = markdown(repeats)
            print("\n".join(lines[2:]))  # the section title is the line above


if __name__ == "__main__":
    main()
