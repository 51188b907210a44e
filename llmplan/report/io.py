"""Saving a report directory and reading it back.

Layout: ``report.json`` (summaries, config, provenance, sweep), ``requests-<label>.csv``
and ``samples-<label>.csv`` per run, ``sweep.csv``, PNG plots and ``report.md``. The
per-request CSV is the row-level truth: ``llmplan report`` recomputes the SLO flags from
it and checks them against the saved summary before rendering.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from llmplan.errors import LlmplanError
from llmplan.metrics import RunMetrics, add_slo_flags
from llmplan.report.markdown import render_markdown
from llmplan.report.model import SCHEMA_VERSION, BenchReport, SweepPoint, slug


def _clean(obj: Any) -> Any:
    """JSON has no NaN; write null instead so other tools can read the file."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _clean(obj.item())
    return obj


def _slim(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "utilization"}


def to_json(report: BenchReport) -> dict[str, Any]:
    return _clean(
        {
            "schema": SCHEMA_VERSION,
            "llmplan_version": report.version,
            "created_utc": report.created_utc,
            "command": report.command,
            "seed": report.seed,
            "config": report.config,
            "workload": report.workload,
            "runs": {
                lb: {"file": f"requests-{slug(lb)}.csv", "summary": m.summary}
                for lb, m in report.runs.items()
            },
            "sweep": {
                "target": report.sweep_target,
                "points": [
                    {
                        "label": p.label,
                        "rate_rps": p.rate_rps,
                        "rate_scale": p.rate_scale,
                        "summary": _slim(p.summary),
                    }
                    for p in report.sweep
                ],
                "goodput_distserve": report.goodput_distserve,
            },
            "extra": report.extra,
            "repeats": report.repeats,
        }
    )


def write_report(report: BenchReport, out: Path, *, plots: bool = True) -> list[Path]:
    """Write the whole report directory; returns the files written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LlmplanError(f"cannot create report directory {out} ({exc.strerror}); pass --out DIR") from exc
    written = []
    for label, m in report.runs.items():
        p = out / f"requests-{slug(label)}.csv"
        m.requests.to_csv(p, index=False, float_format="%.9g")
        written.append(p)
        if not m.samples.empty:
            p = out / f"samples-{slug(label)}.csv"
            m.samples.to_csv(p, index=False, float_format="%.9g")
            written.append(p)
    if report.sweep:
        p = out / "sweep.csv"
        report.sweep_frame().to_csv(p, index=False, float_format="%.9g")
        written.append(p)
    p = out / "report.json"
    p.write_text(json.dumps(to_json(report), indent=2, default=str) + "\n")
    written.append(p)
    if plots:
        from llmplan.report.plots import render_all

        written += render_all(report, out)
    from llmplan.report.plots import plot_names

    # Link whatever plots the directory holds, so re-rendering with --no-plots keeps them.
    images = [out / n for n in plot_names(report) if (out / n).is_file()]
    p = out / "report.md"
    p.write_text(render_markdown(report, images))
    written.append(p)
    return written


def _mismatch(att: float, saved: float, n: int) -> str:
    """Two attainments that differ, with enough digits to show it and the difference in requests."""
    digits = 4
    while digits < 17 and f"{att:.{digits}f}" == f"{saved:.{digits}f}":
        digits += 1
    return (
        f"SLO attainment {att:.{digits}f} in the CSV vs {saved:.{digits}f} in report.json: "
        f"{att * n:.0f} vs {saved * n:.0f} of {n} requests met their SLOs"
    )


def load_report(directory: Path) -> BenchReport:
    """Read a report directory written by :func:`write_report`."""
    directory = Path(directory)
    jpath = directory / "report.json"
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise LlmplanError(
            f"{jpath} not found: {directory} {what}; pass a directory written by `llmplan bench --out DIR`"
        )
    if not jpath.is_file():
        raise LlmplanError(f"{jpath} not found; pass a directory written by `llmplan bench --out DIR`")
    from llmplan.validate import read_text

    text = read_text(jpath, "report", "re-run llmplan bench")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmplanError(f"{jpath} is not valid JSON (line {exc.lineno}); re-run llmplan bench") from exc
    if not isinstance(data, dict):
        raise LlmplanError(f"{jpath} is not a report object; re-run llmplan bench")
    try:
        return _report_from(data, directory, jpath)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise LlmplanError(
            f"{jpath} is malformed ({type(exc).__name__}: {exc}); re-run llmplan bench"
        ) from None


def _report_from(data: dict, directory: Path, jpath: Path) -> BenchReport:
    if data.get("schema") != SCHEMA_VERSION:
        raise LlmplanError(
            f"{jpath} has report schema {data.get('schema')!r}, this llmplan reads {SCHEMA_VERSION}; "
            "re-run llmplan bench with this version"
        )
    runs: dict[str, RunMetrics] = {}
    for label, entry in data["runs"].items():
        cpath = directory / entry["file"]
        if not cpath.is_file():
            raise LlmplanError(f"{cpath} is missing from the report directory; re-run llmplan bench")
        df = pd.read_csv(cpath, keep_default_na=True)
        recomputed = add_slo_flags(df.copy())
        saved_att = entry["summary"]["attainment"]["all"]
        # --warmup: the summary covers the rows after the warm-up only.
        measured = recomputed
        if "in_warmup" in recomputed:
            measured = recomputed[~recomputed["in_warmup"].astype(bool)]
        att = float(measured["slo_met"].mean())
        if saved_att is not None and abs(att - saved_att) > 1e-9:
            raise LlmplanError(f"{cpath} does not match report.json ({_mismatch(att, saved_att, len(df))}); "
                               "the directory was edited by hand: re-run llmplan bench")  # fmt: skip
        spath = directory / f"samples-{slug(label)}.csv"
        samples = pd.read_csv(spath) if spath.is_file() else pd.DataFrame()
        runs[label] = RunMetrics(recomputed, samples, entry["summary"])
    sweep = data.get("sweep") or {}
    return BenchReport(
        runs=runs,
        config=data.get("config", {}),
        workload=data.get("workload", {}),
        seed=data.get("seed", 0),
        version=data.get("llmplan_version", "?"),
        created_utc=data.get("created_utc", ""),
        command=data.get("command", ""),
        sweep=[
            SweepPoint(p["label"], p["rate_rps"], p["rate_scale"], p["summary"])
            for p in sweep.get("points", [])
        ],
        sweep_target=sweep.get("target", 0.9),
        goodput_distserve=sweep.get("goodput_distserve", {}),
        extra=data.get("extra", {}),
        repeats=data.get("repeats") or {},
    )
