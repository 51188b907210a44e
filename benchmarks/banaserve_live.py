"""Live vLLM-style vs DistServe-style vs BanaServe-style deployments of the built-in CPU engine.

The simulated comparison (``llmplan bench --compare vllm,distserve,banaserve``) prices 13B
models on A100s; this script runs the three architectures for real, at the scale a small CPU
machine carries: each system is one ``llmplan serve --instances 2`` deployment on 127.0.0.1
(two built-in backends with dummy weights, one torch thread each, behind llmplan's front end),
and the same slice of the Azure LLM inference trace 2023 (conversation) is replayed against
each, open loop, by ``llmplan.loadgen.replay``:

Each system is the one ``llmplan.bench.systems`` defines (the simulated comparison builds from
the same definition), deployed by ``llmplan.bench.live.serve_argv``:

* ``vllm``      -- two colocated instances, continuous batching, round-robin router;
* ``distserve`` -- static 1:1 P/D (``--pd 1:1``), least-loaded router: the prefill instance writes
                   the prompt's KV to the global store, the decode instance loads it and decodes;
* ``banaserve`` -- 1:1 P/D over the global KV store with the BanaServe router (Algorithm 4-2);
                   the migration controller is not run live in a P:D deployment (recorded);
* ``banaserve-workers`` (opt-in: ``--systems ...,banaserve-workers``) -- one instance over two
                   worker processes (``--workers 2``) with the migration controller (layer moves
                   and attention offloads between the two; no store: it
                   serves single-worker instances only).

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
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from llmplan.bench.live import LIVE_SYSTEMS as SYSTEMS
from llmplan.bench.live import WORKER_SYSTEMS


def workload(args: argparse.Namespace, rate: float):
    """The Azure conv slice, lengths scaled for the CPU, arrivals rescaled to ``rate`` req/s."""
    from llmplan.bench.live import scale_lengths
    from llmplan.workload.loader import load_workload
    from llmplan.workload.shaping import offered_rate, rescale_rate
    from llmplan.workload.slo import assign_slos

    wl = load_workload("azure-conv", max_requests=args.requests)
    raw_p = np.array([r.prompt_tokens for r in wl.requests])
    raw_o = np.array([r.output_tokens for r in wl.requests])
    wl = scale_lengths(
        wl, args.prompt_scale, args.output_scale, max_prompt=args.max_prompt, max_output=args.max_output
    )
    wl = rescale_rate(wl, rate / offered_rate(wl))
    assign_slos(wl, args.slo)
    p = np.array([r.prompt_tokens for r in wl.requests])
    o = np.array([r.output_tokens for r in wl.requests])
    scaling = (
        f"Azure conv 2023, first {len(wl.requests)} requests; prompt tokens x{args.prompt_scale:g} "
        f"(cap {args.max_prompt}): mean {raw_p.mean():.0f} -> {p.mean():.0f}, output tokens "
        f"x{args.output_scale:g} (cap {args.max_output}): mean {raw_o.mean():.0f} -> {o.mean():.0f}; "
        f"SLO {args.slo}"
    )
    return wl, scaling


def run_system(system: str, rate: float, wl, args: argparse.Namespace, work: Path) -> dict:
    from llmplan.bench.live import LiveConfig, run_live_system
    from llmplan.metrics import compute_metrics

    cfg = LiveConfig(
        model=args.model, max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        num_kv_blocks=args.num_kv_blocks, timeout_s=args.timeout, seed=args.seed,
    )  # fmt: skip
    run = run_live_system(system, wl, work / f"{system}-{rate:g}", cfg)
    s = compute_metrics(run.result, wl).summary
    lat = s["latency"]
    imb = run.imbalance()
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
        "routed": run.routed,
        "computed_tokens": run.computed_tokens,
        "queue_mean": run.queue_mean,
        "load_routed": imb["routed"],
        "load_tokens": imb["tokens"],
        "load_queue": imb["queue"],
        "store_hit_tokens": run.store_hit_tokens,
        "pd_handoffs": run.pd_handoffs,
        "pd_failures": run.pd_failures,
        "migrations": run.migrations,
        "offloads": run.offloads,
        "wall_s": run.wall_s,
        "loadavg": run.loadavg,
    }


def simulate(system: str, wl, args: argparse.Namespace) -> dict:
    """The simulator on the same workload: same instances, policy, router, P:D split, priced by
    the calibration profile; the store hand-off is a local disk copy (fast link)."""
    from llmplan.bench.systems import system_config
    from llmplan.metrics import compute_metrics
    from llmplan.runtime.calibration import load_profile
    from llmplan.runtime.sim import simulate as run_sim

    # The same definition (llmplan.bench.systems) the live run deployed, built for the simulator.
    cfg = system_config(
        system, model=args.model, gpus=2, pd=(1, 1), cost=load_profile(args.calibration),
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        chunked_prefill=True, num_blocks=args.num_kv_blocks, record_token_times=True, kv_link_gbps=1.0,
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
        if r["system"] in WORKER_SYSTEMS:
            busy = {k: round(v, 1) for k, v in r["computed_tokens"].items()}
            print(
                f"{r['rate']:g} req/s {r['system']}: worker busy s {busy}, layer migrations "
                f"{r['migrations']:.0f}, attention offloads {r['offloads']:.0f}; {extra}; "
                f"wall {r['wall_s']:.0f} s"
            )
            continue
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
                if args.calibration and system not in WORKER_SYSTEMS:
                    sims[(rate, system)] = simulate(system, wl, args)
    print_table(rows, sims)
    if args.json_out:
        sim = [{"rate": k[0], "system": k[1], **v} for k, v in sims.items()]
        Path(args.json_out).write_text(json.dumps({"scaling": scaling, "rows": rows, "sim": sim}, indent=1))


if __name__ == "__main__":
    main()
