"""Is the system keeping up with the offered load? Latency numbers from an over-saturated
run describe the length of the run, not the system, so reports flag it loudly.

Three signals, any of which flags the run:
- ``ttft_trend``: TTFT of the last quarter of arrivals is well above the first quarter's
  (ratio >= 3 and at least 1 s more): the queue grew during the run.
- ``drain``: after the last arrival the system needed more than a quarter of the arrival
  span (and over 10x the early median E2E) to finish: arrivals outran completions.
- ``queue_growth``: the total waiting queue over the sampled instances ends far above
  where it started (last-quarter mean >= 4x first quarter and >= 8 requests).

Busy share is deliberately not a signal: under continuous batching an instance decoding a
single sequence counts as busy, so ~100% busy is normal at moderate load.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def _median(x: pd.Series) -> float:
    v = x.dropna()
    return float(v.median()) if len(v) else float("nan")


def saturation_check(df: pd.DataFrame, samples: pd.DataFrame | None = None) -> dict[str, Any]:
    reasons: list[str] = []
    out: dict[str, Any] = {"oversaturated": False, "reasons": reasons}
    if len(df) < 8:
        return out
    d = df.sort_values("arrival_s")
    q = max(len(d) // 4, 1)
    first, last = d.iloc[:q], d.iloc[-q:]
    t_first, t_last = _median(first["ttft_s"]), _median(last["ttft_s"])
    out["ttft_p50_first_quarter_s"] = t_first
    out["ttft_p50_last_quarter_s"] = t_last
    if np.isfinite(t_first) and np.isfinite(t_last) and t_last >= 3 * t_first and t_last - t_first >= 1.0:
        reasons.append(f"TTFT rose from {t_first:.2f} s to {t_last:.2f} s (median, first vs last quarter)")

    span = float(d["arrival_s"].iloc[-1] - d["arrival_s"].iloc[0])
    finish = d["finish_s"].dropna()
    if span > 0 and len(finish):
        drain = float(finish.max() - d["arrival_s"].iloc[-1])
        e2e_first = _median(first["e2e_s"])
        out["drain_s"] = drain
        if drain > 0.25 * span and (not np.isfinite(e2e_first) or drain > 10 * e2e_first):
            reasons.append(
                f"{drain:.0f} s to drain after the last arrival ({drain / span:.0%} of the arrival span)"
            )

    if samples is not None and not samples.empty:
        # Instances are sampled at their own times; put them on a common grid of 100 bins
        # (mean per instance per bin), then add the instances up.
        t = samples["t_s"].to_numpy(dtype=np.float64)
        span = float(t.max() - t.min())
        bins = np.floor((t - t.min()) / span * 99.999).astype(int) if span > 0 else np.zeros(len(t), int)
        per = samples.assign(_bin=bins).groupby(["_bin", "instance"])["waiting"].mean()
        tot = per.groupby(level="_bin").sum().sort_index()
        if len(tot) >= 8:
            k = max(len(tot) // 4, 1)
            w0, w1 = float(tot.iloc[:k].mean()), float(tot.iloc[-k:].mean())
            out["waiting_first_quarter"], out["waiting_last_quarter"] = w0, w1
            if w1 >= 8 and w1 >= 4 * max(w0, 1.0):
                reasons.append(f"waiting queue grew from {w0:.0f} to {w1:.0f} requests")
    out["oversaturated"] = bool(reasons)
    return out
