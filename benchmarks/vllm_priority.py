"""vLLM FCFS vs vLLM + llmplan's policy as request priorities, on an Azure conv slice at overload.

Each arm is one real deployment: ``vllm serve`` (the CPU build, random weights, llama-120m dims
as in ``benchmarks/serve_vs_vllm.py``) supervised behind llmplan's front end, exactly what
``llmplan serve --engine vllm --admission NAME`` runs:

* ``fcfs``: vLLM's default scheduler, no priority field (vLLM FCFS);
* ``slo-odbs`` / ``sjf`` / ...: vLLM with ``--scheduling-policy priority``; the front end sets each
  request's ``priority`` from the batch policy's order key (``llmplan.frontend.priority``);
* ``cls:slo-odbs`` / ``cls:sjf`` / ...: vLLM running llmplan's ``PolicyScheduler``
  (``--vllm-route scheduler-cls``): the policy object picks from vLLM's waiting queue at every
  admission, with the request's SLOs passed as ``vllm_xargs`` (vLLM 0.32.x).

The same slice of the Azure LLM inference trace 2023 (conversation), lengths scaled for the
CPU, arrivals rescaled to ``--rate`` req/s, is replayed open loop against each arm by
``llmplan.loadgen.replay`` (token-id prompts, ``ignore_eos``, ``max_tokens`` = the trace's
output length, so the front end's length prediction is exact). All arms' servers start
together (one warm-up) and the runs interleave, arm by arm, ``--repeat`` times, rotating which
arm goes first. Per arm: SLO attainment, goodput, TTFT/TPOT p50 and p99, min / median / max
over the repeats.

    python benchmarks/vllm_priority.py --vllm-bin /work/vllm-venv/bin/vllm --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

KV_TOKENS, BLOCK, BUDGET, SEQS = 14_464, 32, 2048, 32  # vLLM CPU attention needs blocks of 32k


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def workload(args: argparse.Namespace, vocab: int):
    import numpy as np

    from llmplan.bench.live import scale_lengths
    from llmplan.workload.loader import load_workload
    from llmplan.workload.shaping import offered_rate, rescale_rate
    from llmplan.workload.slo import assign_slos

    wl = load_workload("azure-conv", max_requests=args.requests)
    wl = scale_lengths(wl, args.prompt_scale, args.output_scale, max_prompt=args.max_prompt,
                       max_output=args.max_output)
    wl = rescale_rate(wl, args.rate / offered_rate(wl))
    assign_slos(wl, args.slo)
    rng = random.Random(args.seed)
    for r in wl.requests:
        r.token_ids = np.array([rng.randrange(3, vocab) for _ in range(r.prompt_tokens)], dtype=np.int32)
    p = [r.prompt_tokens for r in wl.requests]
    o = [r.output_tokens for r in wl.requests]
    span = wl.requests[-1].arrival_s - wl.requests[0].arrival_s
    print(f"Azure conv 2023, first {len(p)} requests over {span:.0f} s ({args.rate:g} req/s); prompt tokens "
          f"x{args.prompt_scale:g} (cap {args.max_prompt}, mean {statistics.mean(p):.0f}), output tokens "
          f"x{args.output_scale:g} (cap {args.max_output}, mean {statistics.mean(o):.0f}); SLO {args.slo}",
          flush=True)
    return wl


def _arm_route(arm: str) -> tuple[str, str]:
    """An arm's ``--admission`` name and ``--vllm-route``: ``cls:NAME`` runs the scheduler class."""
    return (arm.removeprefix("cls:"), "scheduler-cls") if arm.startswith("cls:") else (arm, "priority")


def _serve_arm(admission: str, args: argparse.Namespace, model_dir: str, logs: Path, urls) -> None:
    """Child process: one deployment (vLLM + front end), until SIGTERM. Each arm gets its own
    process: asyncio's child watcher misreads exit codes with several supervisors' loops in one."""
    from llmplan.frontend.deploy import DeployConfig, run
    from llmplan.frontend.launch import VllmInstance, vllm_spec
    from llmplan.frontend.vllm_compat import launch_route

    arm = admission
    admission, route_name = _arm_route(arm)
    route = launch_route(admission, route_name)  # what `llmplan serve --engine vllm` adds
    spec = vllm_spec(VllmInstance(name=f"vllm-{arm.replace(':', '-')}", gpus=[0]), model_dir, _port(),
                     vllm_bin=args.vllm_bin)
    spec.argv += [
        "--dtype", "float32", "--load-format", "dummy", "--max-num-batched-tokens", str(BUDGET),
        "--max-num-seqs", str(SEQS), "--block-size", str(BLOCK),
        "--num-gpu-blocks-override", str(KV_TOKENS // BLOCK), "--max-model-len", "1024",
        "--skip-tokenizer-init", *route.argv,
    ]  # fmt: skip
    spec.env = {"VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1",
                "VLLM_CPU_OMP_THREADS_BIND": "0", **route.env}
    cfg = DeployConfig(port=_port(), admission=admission, vllm_priority=route.priority,
                       vllm_slo_xargs=route.slo_xargs, log_dir=logs,
                       health_timeout_s=args.start_timeout, max_inflight_per_backend=1024, max_queue=4096)
    with contextlib.suppress(KeyboardInterrupt):
        run([spec], cfg, ready=lambda url, *_: urls.put((arm, url)))


def start_arms(
    names: list[str], args: argparse.Namespace, model_dir: str, logs: Path, arms: list[dict]
) -> None:
    """Start every arm (into ``arms``, so the caller can stop them whatever happens) and wait."""
    ctx = multiprocessing.get_context("spawn")
    urls = ctx.Queue()
    for name in names:
        proc = ctx.Process(target=_serve_arm, args=(name, args, model_dir, logs, urls), daemon=False)
        proc.start()
        arms.append({"admission": name, "proc": proc, "t0": time.monotonic()})
    deadline = time.monotonic() + args.start_timeout
    by_name = {a["admission"]: a for a in arms}
    while any("url" not in a for a in arms):
        for a in arms:
            if "url" not in a and not a["proc"].is_alive():
                raise SystemExit(f"arm {a['admission']}: vLLM did not start; see {logs}/")
        if time.monotonic() > deadline:
            raise SystemExit(f"not every arm was healthy within {args.start_timeout:.0f} s; see {logs}/")
        with contextlib.suppress(queue.Empty):
            name, url = urls.get(timeout=1)
            by_name[name]["url"] = url
            by_name[name]["start_s"] = time.monotonic() - by_name[name]["t0"]
            print(f"  {name}: healthy after {by_name[name]['start_s']:.0f} s", file=sys.stderr, flush=True)


def stop_arms(arms: list[dict]) -> None:
    for a in arms:
        if a["proc"].is_alive():
            os.kill(a["proc"].pid, signal.SIGTERM)
    for a in arms:
        a["proc"].join(timeout=90)
        if a["proc"].is_alive():
            a["proc"].kill()


def run_once(arm: dict, wl) -> dict:
    from llmplan.loadgen.replay import replay
    from llmplan.metrics import compute_metrics

    t = time.monotonic()
    res = replay(arm["url"], wl, timeout_s=1800.0, sample_interval_s=5.0)
    s = compute_metrics(res, wl).summary
    lat = s["latency"]
    return {
        "attainment": s["attainment"]["all"], "att_ttft": s["attainment"].get("ttft"),
        "goodput_rps": s["goodput_rps"],
        "ttft_p50": lat["ttft_s"]["p50"], "ttft_p99": lat["ttft_s"]["p99"],
        "tpot_p50": lat["tpot_s"]["p50"], "tpot_p99": lat["tpot_s"]["p99"],
        "done": s["completed"], "failed": s["failed"] + s["rejected"], "wall_s": time.monotonic() - t,
        "loadavg": os.getloadavg()[0],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vllm-bin", default=os.environ.get("LLMPLAN_VLLM_BIN") or shutil.which("vllm"),
                    help="the vllm CLI (default: LLMPLAN_VLLM_BIN, else vllm on PATH)")
    ap.add_argument("--admissions", default="fcfs,slo-odbs,sjf",
                    help="arms: --admission names (priority route), cls:NAME for the scheduler class")
    ap.add_argument("--requests", type=int, default=80)
    ap.add_argument("--rate", type=float, default=3.0, help="req/s (overload: above what vLLM serves)")
    ap.add_argument("--prompt-scale", type=float, default=0.25)
    ap.add_argument("--output-scale", type=float, default=0.25)
    ap.add_argument("--max-prompt", type=int, default=512)
    ap.add_argument("--max-output", type=int, default=128)
    ap.add_argument("--slo", default="proportional:a=1,b=0.004,tpot=1,slack=1.5")
    ap.add_argument("--out", help="write every run's figures here (JSON)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1,
                    help="unreported replays per arm first (a first one after start-up ran up to 10x slower)")
    ap.add_argument("--model", default="llama-120m", help="catalog config (random weights)")
    ap.add_argument("--start-timeout", type=float, default=1200.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.vllm_bin:
        print("vllm not found: install the CPU build in a separate venv (docs/vllm.md, \"A real vLLM server "
              "behind the front end\") and pass --vllm-bin /that/venv/bin/vllm", file=sys.stderr)
        return 2

    from llmplan.frontend.vllm_compat import launch_route
    from llmplan.runtime.engine.config import catalog_config

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the arms too
    arms_names = [a.strip() for a in args.admissions.split(",") if a.strip()]
    routes = {name: launch_route(*_arm_route(name)) for name in arms_names}  # refusals before vLLM starts
    cfg = catalog_config(args.model)
    wl = workload(args, cfg.vocab_size)
    model_dir = tempfile.mkdtemp(prefix="vllm_priority-model-")
    with open(os.path.join(model_dir, "config.json"), "w") as fh:
        json.dump({**cfg.to_hf_dict(), "architectures": ["LlamaForCausalLM"], "torch_dtype": "float32"}, fh)
    logs = Path(tempfile.mkdtemp(prefix="vllm_priority-logs-"))
    arms: list[dict] = []
    try:
        start_arms(arms_names, args, model_dir, logs, arms)
        for arm in arms:  # one short request each: first-call costs out of the measurement
            httpx.post(arm["url"] + "/v1/completions", timeout=600,
                       json={"model": model_dir, "prompt": [5, 6, 7, 8], "max_tokens": 4, "ignore_eos": True})
        for _ in range(args.warmup):  # whole replays, not reported: vLLM's CPU build compiles per shape
            for arm in arms:
                r = run_once(arm, wl)
                print(f"  warm-up {arm['admission']}: attainment {r['attainment']:.1%}, {r['wall_s']:.0f} s "
                      "(not reported)", file=sys.stderr, flush=True)
        results: dict[str, list[dict]] = {a["admission"]: [] for a in arms}
        for rep in range(args.repeat):
            for k in range(len(arms)):
                arm = arms[(rep + k) % len(arms)]
                r = run_once(arm, wl)
                results[arm["admission"]].append(r)
                if args.out:  # after every run: a stopped benchmark keeps what it measured
                    with open(args.out, "w") as fh:
                        json.dump({"args": vars(args), "runs": results}, fh, indent=1)
                print(f"  run {rep + 1} {arm['admission']}: attainment {r['attainment']:.1%} (TTFT "
                      f"{r['att_ttft'] or 0:.1%}), goodput "
                      f"{r['goodput_rps']:.3f} req/s, TTFT p50 {r['ttft_p50']:.2f} s "
                      f"p99 {r['ttft_p99']:.2f} s, TPOT p50 {r['tpot_p50'] * 1e3:.0f} ms "
                      f"p99 {r['tpot_p99'] * 1e3:.0f} ms, {r['done']} done / {r['failed']} failed, "
                      f"{r['wall_s']:.0f} s, loadavg {r['loadavg']:.1f}", file=sys.stderr, flush=True)
    finally:
        stop_arms(arms)

    def cell(rows: list[dict], key: str, fmt: str, scale: float = 1.0) -> str:
        v = [r[key] * scale for r in rows if r[key] is not None]
        if not v:
            return "-"
        if len(v) == 1:
            return format(v[0], fmt)
        return f"{format(statistics.median(v), fmt)} [{format(min(v), fmt)}-{format(max(v), fmt)}]"

    print(f"\n{args.repeat} interleaved run(s) per arm; median [min-max]; machine shared with other jobs")
    print("| vLLM scheduling | SLO attainment (all) | TTFT SLO met | goodput req/s | TTFT p50 s | "
          "TTFT p99 s | TPOT p50 ms | TPOT p99 ms | done/failed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        admission, route_name = _arm_route(name)
        if route_name == "scheduler-cls":
            label = f"PolicyScheduler running {admission}"
        else:
            label = f"priority from {name}" if routes[name].priority else "FCFS (default)"
        done = "/".join(str(sum(r[k] for r in rows)) for k in ("done", "failed"))
        print(f"| {label} | {cell(rows, 'attainment', '.1%')} | {cell(rows, 'att_ttft', '.1%')} | "
              f"{cell(rows, 'goodput_rps', '.3f')} | "
              f"{cell(rows, 'ttft_p50', '.2f')} | {cell(rows, 'ttft_p99', '.2f')} | "
              f"{cell(rows, 'tpot_p50', '.0f', 1e3)} | {cell(rows, 'tpot_p99', '.0f', 1e3)} | {done} |")
    print("start-up s: " + ", ".join(f"{a['admission']} {a['start_s']:.0f}" for a in arms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
