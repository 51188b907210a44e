"""Output tokens/s of the synchronous engine on issue 23's workloads, in-process.

32 requests (one for ``single``) added at once to one ``LLMEngine`` (llama-120m dims, fp32, random weights, 1
thread, token budget 2048, 32 sequences per step), stepped to the end; no HTTP, so what
it measures is the engine step (scheduler, step inputs, forward, sampling, detokenization):

* ``prefill``: prompts 32-512 tokens, outputs 8-32;
* ``decode``: prompts 16-64 tokens, outputs 32-96;
* ``single``: one request, 128 in / 128 out (issue 23's single-request row).

    python benchmarks/engine_batched.py prefill
    python benchmarks/engine_batched.py decode --profile     # + torch.profiler's top ops
    python benchmarks/engine_batched.py decode --ab packed   # one change off/on, interleaved

``--ab NAME`` runs the workload with one of the engine's speed-ups switched off, then on,
``--rounds`` times alternately in the same process (same weights, same load on a shared
CPU), and prints min/median/max of each and the ratio of medians. Names: see ``AB``.

Compare two checkouts by running it alternately with each on PYTHONPATH (the CPU is shared:
only ratios from interleaved runs mean anything).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import torch

# workload: (requests, prompt tokens min/max, output tokens min/max)
SHAPES = {
    "prefill": (32, (32, 512), (8, 32)),
    "decode": (32, (16, 64), (32, 96)),
    "single": (1, (128, 128), (128, 128)),
}
_ON: dict[str, range] = {}  # each switch's row range as the engine ships it (read on first use)


def _set_packed(on: bool, engine) -> None:
    from llmplan.runtime.engine import model

    shipped = _ON.setdefault("packed", model.PACKED_ROWS)  # before the first switch writes it
    model.PACKED_ROWS = shipped if on else range(0)


def _set_linear(on: bool, engine) -> None:
    """The compiled linear kernel for decode-sized fp32 products (off: oneDNN's packed path)."""
    from llmplan.runtime.engine import native

    shipped = _ON.setdefault("linear", native.LINEAR_ROWS)  # before the first switch writes it
    native.LINEAR_ROWS = shipped if on else range(0)


def _set_prefill(on: bool, engine) -> None:
    """oneDNN's matmul over the plain weight for products past the linear kernel's rows (off: the
    plain GEMM, MKL's sgemm)."""
    from llmplan.runtime.engine import model

    shipped = _ON.setdefault("prefill", model.PREFILL_ROWS)  # before the first switch writes it
    model.PREFILL_ROWS = shipped if on else range(0)


def _set_glue(on: bool, engine) -> None:
    """The compiled element-wise steps between products (RMSNorm with its residual add, RoPE with
    the KV write, SiLU x up); off: the torch ops."""
    from llmplan.runtime.engine import native

    native.GLUE_STEPS = on


def _set_contig(on: bool, engine) -> None:
    """Consecutive block ids per sequence (attention reads pool slices) vs the stack allocator
    (growth blocks interleave; attention gathers each row's blocks). Swapped between runs,
    when the pool is empty."""
    from llmplan.runtime.core.blocks import BlockManager, ContiguousBlockManager

    old = engine.scheduler.blocks
    assert old.num_used == 0
    cls = ContiguousBlockManager if on else BlockManager
    engine.scheduler.blocks = cls(old.num_blocks, old.block_size, old.prefix_caching)


# name -> switch(on, engine): what --ab compares (off = the code before that change); "bf16"
# compares two engines instead, fp32 (off) and bfloat16 (on), whose tokens differ (an option)
AB = {
    "packed": _set_packed,
    "linear": _set_linear,
    "glue": _set_glue,
    "prefill": _set_prefill,
    "contig": _set_contig,
    "bf16": lambda on, engine: None,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workload", choices=tuple(SHAPES))
    ap.add_argument("--model", default="llama-120m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ab", choices=sorted(AB), help="compare one speed-up off/on, interleaved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtype", default="float32", help="float32 (default) or bfloat16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from llmplan.runtime.engine.api import GenerateRequest, SamplingParams
    from llmplan.runtime.factory import build_engine

    rng = random.Random(args.seed)
    def make(dtype: str):
        return build_engine(dummy_weights=args.model, max_num_seqs=32, max_num_batched_tokens=2048,
                            max_queue=128, kv_cache_gb=1.0, seed=args.seed, dtype=dtype).engine

    engine = make(args.dtype)
    engines = {False: engine, True: make("bfloat16") if args.ab == "bf16" else engine}
    vocab = engine.cfg.vocab_size
    n, (plo, phi), (olo, ohi) = SHAPES[args.workload]
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(plo, phi))] for _ in range(n)]
    outs = [rng.randint(olo, ohi) for _ in range(n)]

    def run(ps: list[list[int]], os_: list[int], tag: str, engine=engine) -> float:
        for i, (p, o) in enumerate(zip(ps, os_, strict=True)):
            sp = SamplingParams(max_tokens=o, temperature=0.0, ignore_eos=True)
            engine.add_request(GenerateRequest(f"{tag}{i}", p, sp), lambda out: None)
        t = time.perf_counter()
        while engine.has_work():
            engine.step()
        return time.perf_counter() - t

    for eng in {id(e): e for e in engines.values()}.values():
        run(prompts[:2], [2] * len(prompts[:2]), "warm", eng)
    if args.ab:
        times: dict[bool, list[float]] = {False: [], True: []}
        for r in range(args.rounds):
            for on in (False, True):
                AB[args.ab](on, engines[on])
                times[on].append(run(prompts, outs, f"ab{r}{int(on)}-", engines[on]))
        AB[args.ab](True, engines[True])
        rates = {on: sorted(sum(outs) / t for t in ts) for on, ts in times.items()}
        for on, label in ((False, "off"), (True, "on ")):
            lo, med, hi = rates[on][0], statistics.median(rates[on]), rates[on][-1]
            print(f"{args.workload} {args.ab} {label}: out tok/s min {lo:.1f} / median {med:.1f} "
                  f"/ max {hi:.1f}")
        pairs = [a / b for a, b in zip(times[False], times[True], strict=True)]
        gain = statistics.median(rates[True]) / statistics.median(rates[False])
        print(f"{args.workload} {args.ab}: on/off {gain:.2f}x "
              f"(medians; per round {', '.join(f'{x:.2f}' for x in pairs)}; {args.rounds} rounds, "
              f"{sum(outs)} output tokens each)")
        return 0
    steps0 = engine.executor.steps
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            dt = run(prompts, outs, "r")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    else:
        dt = run(prompts, outs, "r")
    print(f"{args.workload}: {sum(outs)} output tokens in {dt:.2f} s = {sum(outs) / dt:.1f} out tok/s "
          f"({engine.executor.steps - steps0} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
