"""Attention-level migration in a multi-worker instance: what offloading KV heads buys and costs.

One instance of the engine over two worker processes (gloo, one torch thread each) with a
skewed split, so worker 0 (its layers, plus the embedding and LM head) is the busy stage. A batch
of long-context requests is prefilled, then the same decode steps are timed under four layouts,
each in a fresh process (a second instance in one process ran 1.5x slower than the first, whichever
layout came first: the big KV pools of the first stay mapped) with the same weights:

* ``as planned``   -- the skewed split, nothing moved;
* ``offload``      -- half the KV heads (with their query groups and KV) of every worker-0 layer
                      offloaded to worker 1, which computes their attention while worker 0
                      computes the other half;
* ``layer move``   -- the alternative the controller weighs: boundary layers moved to worker 1;
* ``one process``  -- the whole model in one process (the single-worker engine), for reference.

Printed per layout: decode step time, each worker's busy share of the step, the offload's bytes
and measured time beside the estimate S/B + T_sync, and whether the greedy tokens equal the
single-process run's.

    python benchmarks/attention_offload.py                         # llama-120m, split 8,4
    python benchmarks/attention_offload.py --model llama-tiny --split 3,1 --context 256
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
from llmplan.runtime.factory import build_engine


def _prompts(n: int, length: int) -> list[list[int]]:
    return [[(7 * i + 13 * j) % 31000 + 3 for j in range(length)] for i in range(n)]


def run(layout: str, args) -> dict:
    kw = dict(
        dummy_weights=args.model,
        num_kv_blocks=args.batch * (args.context // 16 + 8) + 8,
        max_num_seqs=args.batch,
        max_num_batched_tokens=args.budget,
        threads=1,
    )
    aeng = (
        build_engine(**kw)
        if layout == "one process"
        else build_engine(**kw, workers=2, layer_split=args.split, worker_timeout_s=120)
    )
    eng = aeng.engine
    ex = eng.executor
    outs: dict[int, list[int]] = {}
    for i, p in enumerate(_prompts(args.batch, args.context)):
        eng.add_request(
            GenerateRequest(
                f"r{i}",
                p,
                SamplingParams(max_tokens=args.warmup + args.steps + 1, temperature=0, ignore_eos=True),
            ),
            lambda o, i=i: outs.setdefault(i, []).extend(o.new_token_ids),
        )
    try:
        while sum(len(t) for t in outs.values()) < args.batch:  # every prompt prefilled
            eng.step()
        move: dict = {}
        if layout == "offload":
            lo, hi = ex.ranges[0]
            rec = ex.offload_attention(list(range(lo, hi)), 0, 1, ex.cfg.num_kv_heads // 2)
            move = {
                "bytes": rec.bytes,
                "measured_s": rec.measured_s,
                "estimate_s": rec.estimate_s,
                "what": f"{rec.kv_heads}/{ex.cfg.num_kv_heads} KV heads of layers {list(rec.layers)}",
            }
        elif layout == "layer move":
            lo, hi = ex.ranges[0]
            k = args.move_layers
            rec = ex.migrate(tuple(range(hi - k, hi)), 0, 1)
            move = {
                "bytes": rec.bytes,
                "measured_s": rec.measured_s,
                "estimate_s": rec.estimate_s,
                "what": f"layers {list(rec.layers)} to worker 1",
            }
        for _ in range(args.warmup):
            eng.step()
        st0 = ex.stats() if layout != "one process" else None
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            eng.step()
            times.append(time.perf_counter() - t0)
        out = {"layout": layout, "step_ms": 1e3 * statistics.median(times), "move": move}
        if st0 is not None:
            st1 = ex.stats()
            wall = st1.step_s_total - st0.step_s_total
            out["busy_share"] = [
                (b1 - b0) / wall for b0, b1 in zip(st0.busy_s_total, st1.busy_s_total, strict=True)
            ]
            out["ranges"] = st1.ranges
        while eng.has_work():
            eng.step()
        out["tokens"] = [outs[i] for i in range(args.batch)]
        return out
    finally:
        if hasattr(ex, "close"):
            ex.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-120m")
    ap.add_argument("--split", default="8,4", help="layers per worker (worker 0 first)")
    ap.add_argument("--move-layers", type=int, default=2, help="layers the 'layer move' layout moves")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=1024, help="prompt tokens per request")
    ap.add_argument("--budget", type=int, default=2048, help="max batched tokens per step (prefill)")
    ap.add_argument("--steps", type=int, default=24, help="timed decode steps")
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument(
        "--layouts",
        default="one process,as planned,offload,layer move",
        help="comma-separated, in the order run (the first is the token reference)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", help=argparse.SUPPRESS)  # one layout, in this process, JSON out
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.only:
        print(json.dumps(run(args.only, args)))
        return

    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]
    unknown = set(layouts) - {"one process", "as planned", "offload", "layer move"}
    if unknown or not layouts:
        ap.error(
            f"unknown layouts {sorted(unknown)}: choose from one process, as planned, offload, layer move"
        )
    rows = []
    for layout in layouts:
        cmd = [sys.executable, __file__, "--only", layout] + [a for a in sys.argv[1:] if a != "--json"]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"layout {layout!r} failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    ref = rows[0]["tokens"]
    base = next((r["step_ms"] for r in rows if r["layout"] == "as planned"), rows[0]["step_ms"])
    if args.json:
        print(
            json.dumps(
                [
                    {k: v for k, v in r.items() if k != "tokens"} | {"identical": r["tokens"] == ref}
                    for r in rows
                ],
                indent=1,
            )
        )
        return
    print(
        f"{args.model}: {args.batch} requests x {args.context}-token prompts, decode steps timed "
        f"(median of {args.steps}); 2 workers split {args.split}, 1 torch thread each; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| layout | decode step ms | vs as planned | busy share w0 / w1 | moved | measured / estimate s "
        f"| tokens = {rows[0]['layout']} |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        busy = " / ".join(f"{b:.2f}" for b in r["busy_share"]) if "busy_share" in r else "-"
        m = r["move"]
        moved = f"{m['what']}, {m['bytes'] / 1e6:.1f} MB" if m else "-"
        times = f"{m['measured_s']:.4f} / {m['estimate_s']:.4f}" if m else "-"
        print(
            f"| {r['layout']} | {r['step_ms']:.1f} | {r['step_ms'] / base:.2f}x | {busy} | {moved} "
            f"| {times} | {r['tokens'] == ref} |"
        )


if __name__ == "__main__":
    main()
