"""Resource-profiler evaluation (issue 5's profiler figures).

Without --csv: starts the built-in engine (``--dummy-weights llama-tiny`` by default: random
weights, real forward passes on CPU) behind real uvicorn on 127.0.0.1, runs the shipped 184-prompt
task suite through it ``--repeat`` times with ``profile collect`` (psutil, this process = the
server), then fits the K-Prototypes profiler (K by elbow) on 75% of the rows and reports, on the
other 25%, the share of requests with relative error < 10% per metric beside one global model
trained in the same run. With --csv: fits and evaluates an existing collection (e.g. from a GPU
server sampled with NVML).

    nice -n 10 python benchmarks/profile_eval.py --out /tmp/prof_bench --repeat 2
"""

from __future__ import annotations

import argparse
import os
import socket
import threading
import time
from pathlib import Path


def _collect_locally(out_csv: Path, repeat: int, model: str) -> None:
    from llmplan.profile.collect import collect
    from llmplan.runtime.factory import build_engine
    from llmplan.runtime.server.run import ServeOptions, build_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = build_engine(dummy_weights=model, max_num_seqs=4, num_kv_blocks=512, max_queue=16)
    server = build_server(engine, ServeOptions(port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    t0 = time.monotonic()
    try:
        collect(
            f"http://127.0.0.1:{port}",
            out_csv,
            sampler="psutil",
            pid=os.getpid(),
            interval_s=0.02,
            repeat=repeat,
        )
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    print(f"collected {out_csv} in {time.monotonic() - t0:.0f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", type=Path, default=None, help="an existing `profile collect` CSV")
    ap.add_argument("--out", type=Path, default=Path("/tmp/prof_bench"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--model", default="llama-tiny", help="dummy-weights model for the local server")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from llmplan.profile.report import fit_and_evaluate, read_csv, render

    args.out.mkdir(parents=True, exist_ok=True)
    csv_path = args.csv
    if csv_path is None:
        csv_path = args.out / "profile.csv"
        _collect_locally(csv_path, args.repeat, args.model)
    t0 = time.monotonic()
    result = fit_and_evaluate(read_csv(csv_path), args.out / "profiler", seed=args.seed)
    print(f"fit + evaluate in {time.monotonic() - t0:.0f}s")
    print(render(result))


if __name__ == "__main__":
    main()
