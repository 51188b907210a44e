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
    # --repeat K: per label and headline metric, mean and 95% t-interval over K seeds, and the
    # paired comparisons (llmplan.report.repeats); empty for a single run.
    repeats: dict[str, Any] = field(default_factory=dict)

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
                    "output_tokens_per_s": s.get("output_tokens_per_s"),
                    "ttft_p99_s": s["latency"]["ttft_s"]["p99"],
                    "tpot_p99_s": s["latency"]["tpot_s"]["p99"],
                    "oversaturated": s["saturation"]["oversaturated"],
                }
            )
        return pd.DataFrame(rows)


def throughput_ratios(labels: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) pairs for the throughput-vs-rate table: BanaServe over each other
    system when it is compared (the thesis's Table 4-2), else every label over the first."""
    if "banaserve" in labels and len(labels) > 1:
        return [("banaserve", lb) for lb in labels if lb != "banaserve"]
    return [(lb, labels[0]) for lb in labels[1:]]


def throughput_rows(report: BenchReport) -> tuple[list[str], list[list[str]]]:
    """Output tokens/s per label and rate, plus the ratios of :func:`throughput_ratios`."""
    df = report.sweep_frame()
    if df.empty:
        return [], []
    labels = list(dict.fromkeys(df["label"]))
    pairs = throughput_ratios(labels)
    header = ["req/s", *[f"{lb} tok/s" for lb in labels], *[f"{a} ÷ {b}" for a, b in pairs]]
    rows = []
    for rate, g in df.groupby("rate_rps", sort=True):
        by = dict(zip(g["label"], g["output_tokens_per_s"], strict=True))
        cells = [f"{rate:g}"] + ["–" if by.get(lb) is None else f"{by[lb]:.0f}" for lb in labels]
        for a, b in pairs:
            num, den = by.get(a), by.get(b)
            cells.append(f"{num / den:.2f}x" if num is not None and den else "–")
        rows.append(cells)
    return header, rows


def slug(label: str) -> str:
    """A file-name-safe form of a run label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"
