"""Synthetic profiling data with cluster structure: each task family runs in its own resource regime
(different base memory, per-token slopes and utilisation), as on a server that batches them apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIMES = {  # task -> (lang weights, input range, output range, base mem, mem/token, util, s/token)
    "chat": ((0.5, 0.5), (5, 30), (10, 60), 150.0, 0.5, 8.0, 0.002),
    "qa": ((0.5, 0.5), (5, 30), (150, 300), 100.0, 0.4, 5.0, 0.001),
    "summarization": ((0.5, 0.5), (250, 430), (20, 60), 24000.0, 40.0, 95.0, 0.060),
    "translation": ((0.5, 0.5), (80, 200), (80, 200), 6000.0, 12.0, 60.0, 0.010),
    "code": ((0.5, 0.5), (30, 80), (400, 900), 12000.0, 30.0, 70.0, 0.040),
}


def synthetic_profile(n: int, seed: int = 0, noise: float = 0.03) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tasks = list(REGIMES)
    rows = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        lw, (ilo, ihi), (olo, ohi), base, slope, util, spt = REGIMES[task]
        lang = "en" if rng.random() < lw[0] else "zh"
        n_in = float(rng.integers(ilo, ihi))
        n_out = float(rng.integers(olo, ohi))
        tokens = n_in + n_out
        eps = lambda: 1 + noise * rng.standard_normal()  # noqa: E731
        rows.append(
            {
                "task": task,
                "lang": lang,
                "input_tokens": n_in,
                "output_tokens_est": n_out,
                "max_mem_mb": (base + slope * tokens) * eps(),
                "mean_mem_mb": (base + 0.6 * slope * tokens) * eps(),
                "max_util": min(100.0, util * (1 + tokens / 800)) * eps(),
                "mean_util": 0.7 * util * eps(),
                "latency_s": (0.05 + spt * n_out + 0.0004 * n_in) * eps(),
            }
        )
    return pd.DataFrame(rows)
