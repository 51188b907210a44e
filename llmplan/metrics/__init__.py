"""Metrics over a RunResult: per-request latencies and SLOs, aggregates, goodput, saturation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from llmplan.metrics.goodput import DistServeGoodput, distserve_goodput
from llmplan.metrics.requests import SLO_KINDS, add_slo_flags, request_frame
from llmplan.metrics.saturation import saturation_check
from llmplan.metrics.summary import pooled_itl, sample_frame, summarize
from llmplan.metrics.tokens import token_times
from llmplan.metrics.types import InstanceSample, RequestRecord, RunResult
from llmplan.metrics.validate import InvalidRunResultError, validate_run
from llmplan.workload.types import Workload


@dataclass(slots=True)
class RunMetrics:
    requests: pd.DataFrame  # one row per request (see llmplan.metrics.requests)
    samples: pd.DataFrame  # instance samples over time
    summary: dict[str, Any]


def compute_metrics(
    result: RunResult, workload: Workload | None = None, *, warmup_s: float = 0.0
) -> RunMetrics:
    """Validate ``result`` (raising on broken invariants) and compute every metric.

    ``warmup_s`` > 0 excludes requests that arrived in the first ``warmup_s`` seconds (from the
    first arrival) and the instance samples taken then from every statistic. They stay in the
    per-request frame, flagged in its ``in_warmup`` column, so nothing is lost; the summary
    says how many were left out. Joules (when modelled) still cover the whole run.
    """
    tokens = token_times(result.records)
    validate_run(result, workload, tokens)
    frame = request_frame(result, tokens)
    samples = sample_frame(result)
    if warmup_s > 0 and result.records:
        cutoff = min(r.arrival_s for r in result.records) + warmup_s
        kept = RunResult(
            records=[r for r in result.records if r.arrival_s >= cutoff],
            samples=[s for s in result.samples if s.t_s >= cutoff],
            # Counted over the whole run: the measured window recounts preemptions from its rows.
            counters={k: v for k, v in result.counters.items() if k != "preemptions"},
            meta=result.meta,
        )
        kept_tokens = token_times(kept.records)
        measured = request_frame(kept, kept_tokens)
        kept_samples = sample_frame(kept)
        summary = summarize(measured, itl=pooled_itl(kept, kept_tokens), samples=kept_samples,
                            counters=kept.counters)  # fmt: skip
        frame["in_warmup"] = frame["arrival_s"] < cutoff
        summary["warmup"] = {"warmup_s": float(warmup_s), "excluded_requests": int(frame["in_warmup"].sum())}
    else:
        summary = summarize(frame, itl=pooled_itl(result, tokens), samples=samples, counters=result.counters)
    pc = prefix_cache_summary(result.counters)
    if pc is not None:
        summary["prefix_cache"] = pc
    if result.meta.get("energy"):  # joules (llmplan.energy; modelled in the simulator)
        summary["energy"] = result.meta["energy"]
    return RunMetrics(frame, samples, summary)


def prefix_cache_summary(counters: dict[str, float]) -> dict[str, Any] | None:
    """The GPU prefix cache's figures (llmplan.runtime.core.blocks) from a run's counters: hit
    rate = prompt tokens found cached / prompt tokens looked up at admission (vLLM's). With a
    simulated global KV store, ``store`` gives the tokens it supplied where the GPU cache had none
    (its ``hit_rate`` over the same looked-up tokens), and ``saved_prefill_tokens`` counts both."""
    q = counters.get("prefix_cache_query_tokens")
    if not q:
        return None
    hit = int(counters.get("prefix_cache_hit_tokens", 0))
    out = {"hit_rate": hit / q, "saved_prefill_tokens": hit, "query_tokens": int(q),
           "evictions": int(counters.get("prefix_cache_evictions", 0))}  # fmt: skip
    if "kv_store_hit_tokens" in counters:
        # The global KV store, the tier below (simulated): prompt tokens it supplied on a GPU miss.
        sh = int(counters["kv_store_hit_tokens"])
        out["store"] = {"hit_tokens": sh, "hit_rate": sh / q,
                        "put_blocks": int(counters.get("kv_store_put_blocks", 0)),
                        "evictions": int(counters.get("kv_store_evictions", 0)),
                        "load_s": float(counters.get("kv_store_load_s", 0.0))}  # fmt: skip
        out["saved_prefill_tokens"] = hit + sh
    return out


__all__ = [
    "SLO_KINDS",
    "DistServeGoodput",
    "InstanceSample",
    "InvalidRunResultError",
    "RequestRecord",
    "RunMetrics",
    "RunResult",
    "add_slo_flags",
    "compute_metrics",
    "distserve_goodput",
    "request_frame",
    "saturation_check",
    "summarize",
    "validate_run",
]
