"""Simulated vLLM vs DistServe vs BanaServe on the Azure conversation trace.

Same hardware for all three (``--gpus`` A100-80GB, one model replica per GPU, TP=1), same
requests (the Azure LLM inference trace 2023, conversation, rescaled to each target rate):

* vllm       -- colocated continuous batching (FCFS), round-robin over the instances;
* distserve  -- static prefill:decode split (``--pd``), least-loaded routing, KV handed over
                the link between the GPUs;
* banaserve  -- the same P:D hardware, BanaServe's load-aware router (Algorithm 4-2) and the
                migration controller (Algorithm 4-1) run every tick through
                :class:`llmplan.migrate.sim_hook.ControllerHook`, whose effect on the simulated
                instances is a first-order model (see that module's docstring).

Prints completed requests/s, output tokens/s, SLO attainment and latency percentiles per rate.

    python benchmarks/banaserve_compare.py --models llama-2-13b,opt-13b --rates 1,2,5,10,15,20

The same comparison with the full report (CSV, plots, throughput ratios) is
``llmplan bench --compare vllm,distserve,banaserve --sweep-rate 1,2,5,10,15,20``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def _wl(rate: float, max_requests: int):
    from llmplan.workload.loader import load_workload
    from llmplan.workload.shaping import offered_rate

    base = load_workload("azure-conv", max_requests=max_requests)
    return load_workload("azure-conv", rate_scale=rate / offered_rate(base), max_requests=max_requests)


def _metrics(res, ttft_slo: float, tpot_slo: float) -> dict[str, float]:
    ok = [r for r in res.records if r.status == "ok"]
    if not ok:
        return {
            "req_s": 0.0,
            "tok_s": 0.0,
            "slo": 0.0,
            "ttft_p50": math.nan,
            "ttft_p99": math.nan,
            "tpot_p50": math.nan,
            "done": 0,
        }
    t0 = min(r.arrival_s for r in res.records)
    end = max(r.finish_s for r in ok)
    ttft = np.array([r.ttft_s for r in ok])
    tpot = np.array([r.tpot_s if r.tpot_s is not None else 0.0 for r in ok])
    met = ((ttft <= ttft_slo) & (tpot <= tpot_slo)).sum()
    span = max(end - t0, 1e-9)
    return {
        "req_s": len(ok) / span,
        "tok_s": sum(r.output_tokens for r in ok) / span,
        "slo": met / len(res.records),
        "ttft_p50": float(np.percentile(ttft, 50)),
        "ttft_p99": float(np.percentile(ttft, 99)),
        "tpot_p50": float(np.percentile(tpot, 50)),
        "done": len(ok),
    }


def run_system(system: str, model: str, gpus: int, pd: tuple[int, int], wl, args):
    from llmplan.bench.systems import controller_hook, system_config
    from llmplan.runtime.sim import simulate

    cfg = system_config(system, model=model, gpu=args.gpu, gpus=gpus, pd=pd, sample_interval_s=1.0)
    t = time.perf_counter()
    res = simulate(wl, cfg)
    m = _metrics(res, args.ttft_slo, args.tpot_slo)
    m["wall_s"] = time.perf_counter() - t
    hook = controller_hook(cfg)
    m["migrations"] = len(hook.applied) if hook else 0
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="llama-2-13b,opt-13b")
    ap.add_argument("--rates", default="1,2,5,10,15,20")
    ap.add_argument("--gpus", type=int, default=4)
    ap.add_argument("--pd", default="2:2", help="static prefill:decode split of DistServe and BanaServe")
    ap.add_argument("--gpu", default="A100-SXM-80GB")
    ap.add_argument("--max-requests", type=int, default=2000)
    ap.add_argument("--ttft-slo", type=float, default=1.0)
    ap.add_argument("--tpot-slo", type=float, default=0.1)
    args = ap.parse_args()
    p, d = (int(x) for x in args.pd.split(":"))
    rates = [float(r) for r in args.rates.split(",")]
    print(
        f"{args.gpus}x {args.gpu}, TP=1, Azure conv trace (first {args.max_requests} requests, rescaled), "
        f"P:D {p}:{d}, SLO TTFT<={args.ttft_slo}s & TPOT<={args.tpot_slo}s"
    )
    for model in args.models.split(","):
        print(f"\n== {model}")
        print(
            f"{'rps':>5} {'system':>10} {'done':>5} {'req/s':>7} {'tok/s':>8} {'SLO%':>6} "
            f"{'TTFT p50':>9} {'TTFT p99':>9} {'TPOT p50':>9} {'migr':>5} | x vLLM  x DistServe"
        )
        for rate in rates:
            wl = _wl(rate, args.max_requests)
            rows = {
                s: run_system(s, model, args.gpus, (p, d), wl, args)
                for s in ("vllm", "distserve", "banaserve")
            }
            for s, m in rows.items():
                rel = ""
                if s == "banaserve":
                    vs_v = m["tok_s"] / max(rows["vllm"]["tok_s"], 1e-9)
                    vs_d = m["tok_s"] / max(rows["distserve"]["tok_s"], 1e-9)
                    rel = f" {vs_v:6.2f}x {vs_d:8.2f}x"
                print(
                    f"{rate:5.0f} {s:>10} {m['done']:5d} {m['req_s']:7.2f} {m['tok_s']:8.0f} "
                    f"{m['slo'] * 100:6.1f} {m['ttft_p50']:9.3f} {m['ttft_p99']:9.3f} {m['tpot_p50']:9.4f} "
                    f"{m['migrations']:5d} |{rel}"
                )


if __name__ == "__main__":
    main()
