"""``report.md``: a self-contained, human-readable account of a bench run."""

from __future__ import annotations

import json
from pathlib import Path

from llmplan.metrics.summary import reason_kinds
from llmplan.report.model import BenchReport, slug, throughput_rows


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1e3:.1f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


CONVENTIONS = """\
**How to read these numbers.** TTFT = first token − arrival; TPOT = (finish − first token) /
(output tokens − 1) (vLLM's definition); ITL = gaps between consecutive tokens, pooled over
requests; E2E = finish − arrival; queueing = first scheduled − arrival. Failed and rejected
requests are **excluded** from latency statistics and **included** in SLO-attainment
denominators (they count as misses). SLO attainment per kind counts only requests that have
a target of that kind; "all" requires every target the request has. Goodput (vLLM
`--goodput`) = completed requests meeting all their SLOs per second of run duration (first
arrival to last completion). DistServe goodput = the highest swept rate at which attainment
stays ≥ the target (from `--sweep-rate`)."""


def render_markdown(report: BenchReport, plots: list[Path]) -> str:
    wl, cfg = report.workload, report.config
    out = [f"# llmplan bench report: {wl.get('name', '?')}", ""]
    out.append(f"llmplan {report.version}, created {report.created_utc}, seed {report.seed}.")
    if report.command:
        out += ["", f"Command: `{report.command}`"]
    out += ["", "## Workload", ""]
    keys = [
        "spec", "requests", "offered_rate_rps", "trace_offered_rate_rps", "time_scale", "arrival_span_s",
        "rate_scale", "window_s", "max_requests",
        "slo", "path", "sha256", "sha256_matches", "url", "tokenizer", "records_recovered", "truncated",
        "license", "citation",
    ]  # fmt: skip
    meta = {**wl.get("meta", {}), **{k: v for k, v in wl.items() if k != "meta"}}
    for k in keys:
        if meta.get(k) is not None:
            v = meta[k]
            out.append(f"- **{k}**: {v:.3f}" if isinstance(v, float) else f"- **{k}**: {v}")
    out += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2, default=str), "```", ""]
    out += ["## Summary", "", CONVENTIONS, ""]
    rows = []
    for label, m in report.runs.items():
        s = m.summary
        att = s["attainment"]
        rows.append(
            [
                label + (" ⚠ over-saturated" if s["saturation"]["oversaturated"] else ""),
                f"{s['completed']}/{s['requests']}",
                _pct(att["all"]),
                _pct(att["ttft"]),
                _pct(att["tpot"]),
                _pct(att["e2e"]),
                f"{s['goodput_rps']:.3f}",
                f"{s['throughput_rps']:.3f}",
                f"{s['output_tokens_per_s']:.1f}",
                str(s["preemptions"]),
                str(s["padding_tokens"]),
            ]
        )
    hdr = ["policy", "completed", "SLO att.", "TTFT att.", "TPOT att.", "E2E att.", "goodput req/s",
           "req/s", "output tok/s", "preemptions", "padding tokens"]  # fmt: skip
    out += [_table(hdr, rows), ""]
    out += ["### Latency (ms; completed requests)", ""]
    rows = []
    for label, m in report.runs.items():
        for key, name in [("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_s", "E2E"),
                          ("queueing_s", "queueing")]:  # fmt: skip
            d = m.summary["latency"][key]
            rows.append(
                [label, name, _ms(d["mean"]), _ms(d["p50"]), _ms(d["p90"]), _ms(d["p99"]), _ms(d["max"])]
            )
    out += [_table(["policy", "metric", "mean", "p50", "p90", "p99", "max"], rows), ""]
    warn = [
        (lb, m.summary["saturation"])
        for lb, m in report.runs.items()
        if m.summary["saturation"]["oversaturated"]
    ]
    if warn:
        out += ["### ⚠ Over-saturation", ""]
        out += [
            f"- **{lb}**: {'; '.join(s['reasons'])}. Latencies at this load grow with the length of "
            "the run; compare policies at a sustainable rate (see the sweep) or add instances."
            for lb, s in warn
        ]
        out.append("")
    fails = [(lb, m.summary) for lb, m in report.runs.items() if m.summary["failure_reasons"]]
    if fails:
        out += ["### Rejected / failed requests", ""]
        for lb, s in fails:
            kinds = reason_kinds(s["failure_reasons"])
            reasons = ", ".join(f"{k} ×{v}" for k, v in kinds.items())
            out.append(f"- **{lb}**: {s['rejected']} rejected, {s['failed']} failed: {reasons}")
        out.append("")
    out += ["### Utilization (time-weighted mean per instance)", ""]
    rows = []
    for label, m in report.runs.items():
        for inst, u in m.summary["utilization"].items():
            rows.append([label, inst, _pct(u["busy_mean"]), _pct(u["kv_mean"]), _pct(u["kv_peak"]),
                         str(u["waiting_peak"])])  # fmt: skip
    out += [_table(["policy", "instance", "busy", "KV mean", "KV peak", "waiting peak"], rows) if rows else
            "No instance samples were recorded.", ""]  # fmt: skip
    sw = report.sweep_frame()
    if not sw.empty:
        out += [f"## SLO attainment vs rate (target {report.sweep_target:.0%})", ""]
        labels = list(dict.fromkeys(sw["label"]))
        rows = []
        for rate, g in sw.groupby("rate_rps", sort=True):
            by = dict(zip(g["label"], g["attainment_all"], strict=True))
            rows.append([f"{rate:.3f}"] + [_pct(by.get(lb)) for lb in labels])
        out += [_table(["req/s", *labels], rows), ""]
        for lb, g in report.goodput_distserve.items():
            if g["rate_rps"] is None:
                out.append(f"- DistServe goodput of **{lb}**: below the lowest swept rate")
            else:
                extra = " (every swept rate passed: the true value is higher)" if g["all_pass"] else ""
                interp = f", ≈{g['interpolated_rps']:.3f} interpolated" if g["interpolated_rps"] else ""
                out.append(f"- DistServe goodput of **{lb}**: {g['rate_rps']:.3f} req/s{interp}{extra}")
        out.append("")
        header, trows = throughput_rows(report)
        out += ["## Output throughput vs rate (tokens/s over the makespan)", "", _table(header, trows), ""]
    for key, section in report.extra.items():
        out += [f"## {key}", "", section if isinstance(section, str) else f"```\n{section}\n```", ""]
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.name})" for p in plots]
        out.append("")
    out += ["## Files", ""]
    out += [f"- `requests-{slug(lb)}.csv`: one row per request ({lb})" for lb in report.runs]
    out += ["- `report.json`: every number above, the full configuration and the workload provenance", ""]
    return "\n".join(out)
