"""Aggregates over a run: attainment, goodput, throughput, latency percentiles, utilization.

Conventions (stated in every report):
- Failed and rejected requests are EXCLUDED from latency statistics (they have no
  latency) but INCLUDED in SLO-attainment denominators (they missed their SLOs).
- Goodput (vLLM ``--goodput``): completed requests meeting all their SLOs per second of
  run duration; the run lasts from the first arrival to the last completion.
- Throughput counts completed requests and their output tokens over the same duration.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from llmplan.metrics.requests import SLO_KINDS
from llmplan.metrics.saturation import saturation_check
from llmplan.metrics.tokens import TokenTimes, token_times
from llmplan.metrics.types import RunResult

PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queueing_s")


def dist(values: np.ndarray) -> dict[str, float | None]:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return {"count": 0, "mean": None, **{f"p{p}": None for p in PERCENTILES}, "max": None}
    out: dict[str, float | None] = {"count": int(len(v)), "mean": float(v.mean())}
    for p, q in zip(PERCENTILES, np.percentile(v, PERCENTILES), strict=True):
        out[f"p{p}"] = float(q)
    out["max"] = float(v.max())
    return out


def pooled_itl(result: RunResult, tokens: TokenTimes | None = None) -> np.ndarray:
    """All inter-token gaps of completed requests, pooled (as vLLM's benchmark reports ITL)."""
    tokens = tokens if tokens is not None else token_times(result.records)
    gaps, owner = tokens.gaps()
    ok = np.fromiter((r.status == "ok" for r in result.records), dtype=bool, count=len(result.records))
    return gaps[ok[owner]] if len(gaps) else gaps


def sample_frame(result: RunResult) -> pd.DataFrame:
    cols = ["t_s", "instance", "running", "waiting", "kv_blocks_used", "kv_blocks_total", "busy_frac"]
    return pd.DataFrame.from_records(
        [
            (s.t_s, s.instance, s.running, s.waiting, s.kv_blocks_used, s.kv_blocks_total, s.busy_frac)
            for s in result.samples
        ],
        columns=cols,
    )


def utilization(samples: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per instance: time-weighted busy share and KV usage (each sample covers the gap since the last)."""
    out: dict[str, dict[str, float]] = {}
    if samples.empty:
        return out
    for inst, g in samples.sort_values("t_s").groupby("instance", sort=True):
        t = g["t_s"].to_numpy(dtype=np.float64)
        dt = np.diff(t, prepend=t[0])
        kv = g["kv_blocks_used"].to_numpy(dtype=np.float64) / np.maximum(g["kv_blocks_total"].to_numpy(), 1)
        busy = g["busy_frac"].to_numpy(dtype=np.float64)
        w = dt.sum()
        out[str(inst)] = {
            "busy_mean": float((busy * dt).sum() / w) if w > 0 else float(busy.mean()),
            "kv_mean": float((kv * dt).sum() / w) if w > 0 else float(kv.mean()),
            "kv_peak": float(kv.max()),
            "waiting_peak": int(g["waiting"].max()),
            "running_peak": int(g["running"].max()),
            "samples": int(len(g)),
        }
    return out


def summarize(
    df: pd.DataFrame,
    *,
    itl: np.ndarray | None = None,
    samples: pd.DataFrame | None = None,
    counters: dict[str, float] | None = None,
) -> dict[str, Any]:
    """All aggregates of one run, as a JSON-ready dict (keys documented in docs/bench.md)."""
    n = len(df)
    ok = df["status"] == "ok"
    n_ok = int(ok.sum())
    t0 = float(df["arrival_s"].min()) if n else 0.0
    end = float(np.nanmax(df["finish_s"].to_numpy(dtype=np.float64))) if df["finish_s"].notna().any() else t0
    duration = max(end - t0, 0.0)
    arrival_span = float(df["arrival_s"].max() - t0) if n else 0.0
    good = int((ok & df["slo_met"]).sum())
    per = (lambda x: x / duration) if duration > 0 else (lambda x: 0.0)

    attainment: dict[str, float | None] = {}
    for kind in SLO_KINDS:
        col = df[f"{kind}_met"]
        has = col.notna()
        attainment[kind] = float(col[has].mean()) if has.any() else None
    attainment["all"] = float(df["slo_met"].mean()) if n else None
    any_slo = df[[f"slo_{k}_s" for k in SLO_KINDS]].notna().any(axis=1)

    latency = {
        "ttft_s": dist(df["ttft_s"].to_numpy(dtype=np.float64)),
        "tpot_s": dist(df["tpot_s"].to_numpy(dtype=np.float64)),
        "itl_s": dist(itl if itl is not None else np.empty(0)),
        "e2e_s": dist(df["e2e_s"].to_numpy(dtype=np.float64)),
        "queueing_s": dist(df.loc[ok, "queueing_s"].to_numpy(dtype=np.float64)),
    }
    counters = dict(counters or {})
    statuses = df["status"].value_counts().to_dict()
    reasons = df.loc[~ok, "reason"].fillna("unknown").value_counts().to_dict()
    return {
        "requests": n,
        "completed": n_ok,
        "rejected": int(statuses.get("rejected", 0)),
        "failed": int(statuses.get("failed", 0)),
        "failure_reasons": {str(k): int(v) for k, v in reasons.items()},
        # The same reasons with their numbers replaced by N: one line per kind of refusal.
        "failure_kinds": reason_kinds(reasons),
        "requests_with_slo": int(any_slo.sum()),
        "duration_s": duration,
        "arrival_span_s": arrival_span,
        "offered_rate_rps": (n - 1) / arrival_span if arrival_span > 0 else None,
        "throughput_rps": per(n_ok),
        "output_tokens_per_s": per(float(df.loc[ok, "output_tokens"].sum())),
        "prompt_tokens_per_s": per(float(df.loc[ok, "prompt_tokens"].sum())),
        "goodput_rps": per(good),
        "attainment": attainment,
        "latency": latency,
        "preemptions": int(counters.get("preemptions", df["preemptions"].sum())),
        "padding_tokens": int(counters.get("padding_tokens", 0)),
        "utilization": utilization(samples) if samples is not None else {},
        "saturation": saturation_check(df, samples),
        "counters": counters,
    }


def reason_kinds(reasons: dict[Any, int], exact_up_to: int = 0) -> dict[str, int]:
    """Failure reasons grouped by their text with every number replaced by ``N``, most
    frequent first ("http 400: the prompt has N tokens but the model's context is N tokens ..." x1612)."""
    import re

    if len(reasons) <= exact_up_to:  # a few reasons read best as they are
        return {str(k): int(v) for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])}
    out: dict[str, int] = {}
    for k, v in reasons.items():
        key = re.sub(r"(?<!http )\b\d+(\.\d+)?", "N", str(k))  # keeps "http 400"
        out[key] = out.get(key, 0) + int(v)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))
