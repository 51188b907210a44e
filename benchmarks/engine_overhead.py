"""Per-step overhead of llmplan's own engine outside the decoder layers, measured on this CPU.

    python benchmarks/engine_overhead.py [--repeats 15]

The real executor step (input flattening, block tables, embedding, decoder layers, LM head, sampling)
is timed at decode batch 1 and 8 for llama-tiny dims with 1, 2 and 4 decoder layers and a
256-token vocabulary (so the LM head is negligible), and the step time is fitted as
``overhead + layers * per_layer``: the intercept is what every step pays whatever the model, the
figure in ``llmplan.opcost.engines`` for ``llmplan``. One thread; on a shared CPU the fastest
round (each the median of a few repeats) is kept: contention only adds time. Scheduler
bookkeeping is not included (the simulator runs that code for real).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from llmplan.models import get_model_spec
from llmplan.runtime.engine.config import ModelConfig
from llmplan.runtime.engine.executor import TorchExecutor
from llmplan.runtime.engine.kvcache import PagedKVCache
from llmplan.runtime.engine.loader import init_dummy_weights
from llmplan.runtime.engine.measure import Point, measure_points
from llmplan.runtime.engine.model import LlamaModel


def step_times(layers: int, batches: tuple[int, ...], repeats: int) -> dict[int, float]:
    spec = dataclasses.replace(get_model_spec("llama-tiny"), num_hidden_layers=layers, vocab_size=256)
    cfg = ModelConfig.from_hf_dict(spec.to_hf_config_dict(), name=f"tiny-{layers}")
    dev = [torch.device("cpu")] * layers
    m = LlamaModel(cfg, dev, torch.float32)
    init_dummy_weights(m, seed=0)
    kv = PagedKVCache(cfg, 64, 16, m.layer_devices, m.dtype)
    ex = TorchExecutor(m, kv)
    pts = [Point(decode=(b, 32)) for b in batches]
    samples = measure_points(ex, pts, repeats=repeats, vocab_size=256)
    return {b: s.time_s for b, s in zip(batches, samples, strict=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    torch.set_num_threads(1)
    layer_counts = (1, 2, 4)
    batches = (1, 8)
    rounds = [{n: step_times(n, batches, a.repeats) for n in layer_counts} for _ in range(a.rounds)]
    print(f"torch {torch.__version__}, 1 thread; step ms: best of {a.rounds} rounds (median of {a.repeats})")
    print("batch  " + "  ".join(f"{n} layer(s)" for n in layer_counts) + "   intercept (0 layers)  per layer")
    out = {}
    for b in batches:
        t = [min(r[n][b] for r in rounds) for n in layer_counts]
        slope, icpt = np.polyfit(layer_counts, t, 1)
        out[b] = icpt
        cells = "  ".join(f"{x * 1e3:10.3f}" for x in t)
        print(f"{b:>5}  {cells}   {icpt * 1e3:10.3f} ms          {slope * 1e3:.3f} ms")
    print(f"llmplan engine per-step overhead on this CPU: {np.mean(list(out.values())) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
