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


def compute_metrics(result: RunResult, workload: Workload | None = None) -> RunMetrics:
    """Validate ``result`` (raising on broken invariants) and compute every metric."""
    tokens = token_times(result.records)
    validate_run(result, workload, tokens)
    frame = request_frame(result, tokens)
    samples = sample_frame(result)
    summary = summarize(frame, itl=pooled_itl(result, tokens), samples=samples, counters=result.counters)
    if result.meta.get("energy"):  # joules (llmplan.energy; modelled in the simulator)
        summary["energy"] = result.meta["energy"]
    return RunMetrics(frame, samples, summary)


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
