"""Predicted (simulator) vs measured (live) latencies, side by side with relative errors."""

from __future__ import annotations

from llmplan.report.model import BenchReport


def predicted_vs_measured(report: BenchReport) -> str:
    """A markdown table: the live run against every ``sim:*`` run of the same workload."""
    live = report.runs.get("live")
    if live is None:
        return "No live run to compare."
    rows = ["| metric | measured (live) | " + " | ".join(k for k in report.runs if k != "live") + " |"]
    rows.append("|---" * (len(report.runs) + 1) + "|")
    for key, name in [("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E")]:
        for stat in ("p50", "p90", "p99"):
            meas = live.summary["latency"][key][stat]
            cells = []
            for label, m in report.runs.items():
                if label == "live":
                    continue
                pred = m.summary["latency"][key][stat]
                if pred is None or meas is None:
                    cells.append("–")
                else:
                    err = (pred - meas) / meas if meas else float("nan")
                    cells.append(f"{pred * 1e3:.1f} ms ({err:+.1%})")
            rows.append(
                f"| {name} {stat} | {'–' if meas is None else f'{meas * 1e3:.1f} ms'} | "
                + " | ".join(cells)
                + " |"
            )
    return "\n".join(rows)
