"""`llmplan serve` with and without the global KV store, on prompts that share a prefix.

Every prompt is ``--shared`` of one common prefix (a system prompt) plus a unique suffix, sent
one at a time (``--concurrency 1``) or a few at once, streamed, to a real server (uvicorn on
127.0.0.1, the engine of ``llmplan serve``) for each mode:

* ``none``   -- no store (today's engine);
* ``memory`` -- ``--kv-store DIR`` with its memory tier;
* ``disk``   -- ``--kv-store DIR --kv-store-memory-mb 0``: every hit read from a file;
* ``memory+sched``, ``disk+sched`` -- the same with scheduled hits
  (``build_engine(kv_store_schedule_hits=True)``): admission asks the store for the cached
  prefix and only the rest is scheduled and budgeted against ``--max-num-batched-tokens``.

The first request of a store mode is a miss that writes the prefix back; the others load it.
Printed per mode: TTFT (mean, p50), end-to-end latency, engine steps per request, and the
store's own counters.

    nice -n 10 python benchmarks/kvstore_serve.py --model llama-120m --requests 12 --dir /var/tmp
    # a fully cached 512-token prompt under a 128-token step budget, before vs after:
    nice -n 10 python benchmarks/kvstore_serve.py --shared 1 --max-num-batched-tokens 128 \
        --max-tokens 1 --modes memory,memory+sched
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def _server(engine):
    import socket

    from llmplan.runtime.server.run import ServeOptions, build_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = build_server(engine, ServeOptions(port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


def _request(url: str, prompt: list[int], max_tokens: int) -> tuple[float, float]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    ttft = None
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if ttft is None and line.startswith("data: ") and line != "data: [DONE]":
                if json.loads(line[6:])["choices"][0]["text"] is not None:
                    ttft = time.perf_counter() - t0
    return ttft or float("nan"), time.perf_counter() - t0


def _counters(url: str) -> dict[str, float]:
    out = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("llmplan_kvstore_"):
            name, value = line.rsplit(" ", 1)
            out[name.removeprefix("llmplan_kvstore_")] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="llama-120m", help="catalog config, dummy weights")
    ap.add_argument("--requests", type=int, default=12)
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    ap.add_argument("--shared", type=float, default=0.5, help="share of each prompt that is common prefix")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the engine")
    ap.add_argument("--max-num-batched-tokens", type=int, default=512, help="token budget per engine step")
    ap.add_argument(
        "--modes",
        default="none,memory,disk",
        help="comma-separated: none, memory, disk, memory+sched, disk+sched",
    )
    ap.add_argument("--dir", default=None, help="parent of the store's temporary directory")
    args = ap.parse_args()

    from llmplan.runtime.factory import build_engine

    rng = random.Random(0)
    shared = [rng.randrange(100, 30000) for _ in range(int(args.prompt * args.shared))]
    prompts = [
        shared + [rng.randrange(100, 30000) for _ in range(args.prompt - len(shared))]
        for _ in range(args.requests)
    ]
    print(
        f"{args.model}: {args.requests} prompts of {args.prompt} tokens, the first {len(shared)} shared; "
        f"{args.max_tokens} output tokens; concurrency {args.concurrency}; torch threads {args.threads}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    rows = {}
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in ("none", "memory", "disk", "memory+sched", "disk+sched")]
    if bad:
        ap.error(f"unknown mode(s) {bad}; use none, memory, disk, memory+sched, disk+sched")
    steps: dict[str, tuple[int, float]] = {}
    for mode in modes:
        tier, _, sched = mode.partition("+")
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            kw = (
                {}
                if mode == "none"
                else {
                    "kv_store": tmp,
                    "kv_store_memory_mb": 1024 if tier == "memory" else 0,
                    "kv_store_schedule_hits": sched == "sched",
                }
            )
            engine = build_engine(
                dummy_weights=args.model,
                threads=args.threads,
                max_num_seqs=16,
                max_num_batched_tokens=args.max_num_batched_tokens,
                **kw,
            )
            server, thread, url = _server(engine)
            try:
                _request(url, [1, 2, 3], 1)  # warm-up: first forward pass, allocator
                stats = engine.engine.scheduler.stats
                s0 = stats.steps
                res = [_request(url, prompts[0], args.max_tokens)]  # request 1: the miss that fills a store
                s1 = stats.steps
                with ThreadPoolExecutor(args.concurrency) as pool:
                    res += pool.map(
                        _request,
                        [url] * (len(prompts) - 1),
                        prompts[1:],
                        [args.max_tokens] * (len(prompts) - 1),
                    )
                # Engine steps per request: request 1 alone, and the mean over requests 2..N.
                steps[mode] = (s1 - s0, (stats.steps - s1) / max(1, len(prompts) - 1))
                rows[mode] = (res, _counters(url) if mode != "none" else {})
            finally:
                server.should_exit = True
                thread.join(timeout=60)

    base = statistics.mean(t for t, _ in rows["none"][0][1:]) if "none" in rows else None
    print(
        f"\n{'mode':12s} {'TTFT mean':>10s} {'p50':>8s} {'first':>8s} {'e2e mean':>9s} {'steps':>9s}  store"
    )
    for mode, (res, c) in rows.items():
        ttfts = [t for t, _ in res]
        rest = ttfts[1:]  # the first request of a store mode is the miss that fills it
        ratio = f" ({statistics.mean(rest) / base:.2f}x none)" if base else ""
        store = (
            f"hit {c.get('hit_tokens_total', 0):.0f} / computed {c.get('miss_tokens_total', 0):.0f} "
            f"prompt tokens, load {c.get('load_seconds_total', 0):.2f} s (stall "
            f"{c.get('load_stall_seconds_total', 0):.2f}), writer "
            f"{c.get('store_seconds_total', 0):.2f} s"
            if c
            else "-"
        )
        n1, nrest = steps[mode]
        print(
            f"{mode:12s} {statistics.mean(rest) * 1e3:8.0f}ms {statistics.median(rest) * 1e3:6.0f}ms "
            f"{ttfts[0] * 1e3:6.0f}ms {statistics.mean(e for _, e in res) * 1e3:7.0f}ms "
            f"{nrest:4.1f} ({n1:d})  {store}{ratio}"
        )
    print(
        "(TTFT mean/p50 and steps over requests 2..N; 'first' and (steps) are request 1, a miss for "
        "the store modes)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
