"""The compiled linear kernel against oneDNN and plain torch on one decode step's weights.

Every weight product of one step of a model (its decoder layers' fused q/k/v, o, fused gate/up
and down, then the LM head), fp32, for a range of row counts (decode batch sizes), timed three
ways in the same process, interleaved, best of ``--repeats``:

* ``plain``: ``F.linear`` (MKL/oneDNN sgemm as torch calls it, packing the weight every call);
* ``onednn``: oneDNN's matmul over the weight reordered once (the engine's path before the kernel,
  and what vLLM's CPU backend uses);
* ``kernel``: ``native.linear`` over ``native.pack_linear``'s copy.

    python benchmarks/linear_kernel.py                     # llama-120m, 1 thread
    python benchmarks/linear_kernel.py --threads 2 --rows 1 8 32 64

Prints ms per step and GFLOP/s for each, and kernel / oneDNN (below 1: the kernel is faster).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llama-120m", help="a model of llmplan's engine catalog")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 96, 128])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from llmplan.runtime.engine import native
    from llmplan.runtime.engine.config import catalog_config

    st = native.state()
    if st.linear is None:
        print(f"error: the compiled kernel is unavailable: {st.reason}", file=sys.stderr)
        return 2
    cfg = catalog_config(args.model)
    h, hd = cfg.hidden_size, cfg.head_dim
    qkv = (cfg.num_heads + 2 * cfg.num_kv_heads) * hd
    layer = [(qkv, h), (h, cfg.num_heads * hd), (2 * cfg.intermediate_size, h), (h, cfg.intermediate_size)]
    shapes = layer * cfg.num_layers + [(cfg.vocab_size, h)]
    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(n, k, generator=g) * 0.02 for n, k in shapes]
    onednn = [torch.ops.mkldnn._reorder_linear_weight(w, 64) for w in weights]
    packed = [native.pack_linear(w) for w in weights]
    dnn = torch.ops.mkldnn._linear_pointwise
    gb = sum(w.numel() for w in weights) * 4 / 1e9
    print(f"{args.model}: {len(shapes)} weights, {gb:.2f} GB fp32, {args.threads} thread(s)")
    print("ms per step (GFLOP/s)")
    print("| rows | plain | onednn | kernel | kernel / onednn |")
    print("|---|---|---|---|---|")
    for rows in args.rows:
        xs = [torch.randn(rows, k, generator=g) for _, k in shapes]
        paths = {
            "plain": lambda j, xs=xs: F.linear(xs[j], weights[j]),
            "onednn": lambda j, xs=xs: dnn(xs[j], onednn[j], None, "none", [], ""),
            "kernel": lambda j, xs=xs: native.linear(xs[j], packed[j], shapes[j][0], None),
        }
        best = dict.fromkeys(paths, float("inf"))
        for _ in range(args.repeats):
            for name, fn in paths.items():
                t0 = time.perf_counter()
                for j in range(len(shapes)):
                    fn(j)
                best[name] = min(best[name], time.perf_counter() - t0)
        flops = 2 * rows * sum(n * k for n, k in shapes)
        cells = " | ".join(f"{best[n] * 1e3:.1f} ({flops / best[n] / 1e9:.0f})" for n in paths)
        print(f"| {rows} | {cells} | {best['kernel'] / best['onednn']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
