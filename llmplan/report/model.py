"""What a bench report holds: the runs (one per policy) of one workload, plus a rate sweep.

This is the in-memory form that ``write_report`` saves and ``load_report`` reads back, so
``llmplan report DIR`` renders exactly what ``llmplan bench --out DIR`` did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from llmplan.metrics import RunMetrics

SCHEMA_VERSION = 1


@dataclass(slots=True)
class SweepPoint:
    label: str  # policy / run label
    rate_rps: float  # offered arrival rate of this point
    rate_scale: float
    summary: dict[str, Any]  # the same keys as a run summary (utilization dropped for size)


@dataclass(slots=True)
class BenchReport:
    runs: dict[str, RunMetrics]
    config: dict[str, Any]
    workload: dict[str, Any]  # name, source and Workload.meta (provenance)
    seed: int
    version: str
    created_utc: str
    command: str = ""
    sweep: list[SweepPoint] = field(default_factory=list)
    sweep_target: float = 0.9
    goodput_distserve: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Free-form extra sections, e.g. predicted vs measured when a calibration is compared.
    extra: dict[str, Any] = field(default_factory=dict)

    def sweep_frame(self) -> pd.DataFrame:
        rows = []
        for p in self.sweep:
            s = p.summary
            rows.append(
                {
                    "label": p.label,
                    "rate_rps": p.rate_rps,
                    "rate_scale": p.rate_scale,
                    "attainment_all": s["attainment"]["all"],
                    "attainment_ttft": s["attainment"]["ttft"],
                    "attainment_tpot": s["attainment"]["tpot"],
                    "attainment_e2e": s["attainment"]["e2e"],
                    "goodput_rps": s["goodput_rps"],
                    "throughput_rps": s["throughput_rps"],
                    "ttft_p99_s": s["latency"]["ttft_s"]["p99"],
                    "tpot_p99_s": s["latency"]["tpot_s"]["p99"],
                    "oversaturated": s["saturation"]["oversaturated"],
                }
            )
        return pd.DataFrame(rows)


def slug(label: str) -> str:
    """A file-name-safe form of a run label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"
