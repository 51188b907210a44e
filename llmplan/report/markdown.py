"""``report.md``: a self-contained, human-readable account of a bench run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmplan.metrics.summary import reason_kinds
from llmplan.report.mdtable import md_table as _table
from llmplan.report.model import BenchReport, slug, throughput_rows
from llmplan.report.repeats import markdown as repeats_markdown


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1e3:.1f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


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


def _att(m) -> float:
    return m.summary["attainment"]["all"] or 0.0


def _repeat_answer(rp: dict) -> list[str]:
    """With --repeat K: attainment as mean ± 95% interval per run, and each paired comparison."""
    from llmplan.report.repeats import fmt_interval

    if not rp or not rp.get("metrics"):
        return []
    per = "; ".join(f"{lb} {fmt_interval(m['attainment_all'], '%')}" for lb, m in rp["metrics"].items())
    out = [f"Over {rp['k']} seeds (mean ± {rp.get('confidence', 0.95):.0%} interval), SLO attainment: {per}."]
    for c in rp.get("comparisons", []):
        d = c["diff"]
        if c["metric"] != "attainment_all" or d.get("mean") is None or d.get("half") is None:
            continue
        out.append(f"{c['label']} vs {c['baseline']}: {d['mean'] * 100:+.1f} ± {d['half'] * 100:.1f} points, "
                   f"paired by seed ({c['verdict']}).")  # fmt: skip
    return out


def answer(report: BenchReport) -> list[str]:
    """The report's first paragraph: which run won, by how much (or that they tie), and caveats."""
    runs = list(report.runs.items())
    if not runs:
        return ["No runs were recorded."]
    wl = report.workload
    rate = wl.get("offered_rate_rps")
    at = f" at {rate:.2f} req/s" if rate else ""
    if len(runs) == 1:
        label, m = runs[0]
        lines = [f"**{label}**{at}: {_att(m):.1%} of requests met every SLO; goodput "
                 f"{m.summary['goodput_rps']:.2f} req/s."]  # fmt: skip
    else:
        ranked = sorted(runs, key=lambda r: (_att(r[1]), r[1].summary["goodput_rps"]), reverse=True)
        (best, mb), (second, m2) = ranked[0], ranked[1]
        gap = _att(mb) - _att(m2)
        g1, g2 = mb.summary["goodput_rps"], m2.summary["goodput_rps"]
        if gap < 0.0005 and abs(g1 - g2) <= 0.005 * max(g1, g2, 1e-9):
            tied = [lb for lb, m in ranked if _att(mb) - _att(m) < 0.0005]
            lines = [f"**No winner{at}**: {', '.join(tied)} tie at {_att(mb):.1%} of requests meeting "
                     f"every SLO (goodput {g1:.2f} req/s). Nothing separates them at this load; a higher "
                     "`--rate-scale` or `--sweep-rate` shows where they part."]  # fmt: skip
        else:
            rest = "; ".join(f"{lb} {_att(m):.1%}" for lb, m in ranked[1:])
            rel = f" ({(g1 - g2) / g2:+.1%})" if g2 > 0 else ""
            verb = "wins" if gap >= 0.01 else "leads narrowly"
            lines = [f"**{best} {verb}{at}**: {_att(mb):.1%} of requests met every SLO, "
                     f"{gap * 100:+.1f} points over {second} ({rest}); goodput {g1:.2f} vs {g2:.2f} "
                     f"req/s{rel}."]  # fmt: skip
            if gap < 0.01 and not report.repeats:
                lines.append("One run per policy: a gap under 1 point may not survive another --seed "
                             "(`--repeat K` gives intervals).")  # fmt: skip
    lines += _repeat_answer(report.repeats)
    sat = [lb for lb, m in runs if m.summary["saturation"]["oversaturated"]]
    if sat:
        who = "every run is" if len(sat) == len(runs) else ", ".join(sat) + (" is" if len(sat) == 1 else
                                                                             " are")  # fmt: skip
        lines.append(f"Caveat: {who} over-saturated at this rate (the queue grew during the run), so "
                     "tail latencies grow with the run length.")  # fmt: skip
    gd = {lb: g for lb, g in report.goodput_distserve.items() if g.get("rate_rps") is not None}
    if gd:
        # The interpolated crossing separates runs that pass at the same swept rate.
        val = {lb: float(g.get("interpolated_rps") or g["rate_rps"]) for lb, g in gd.items()}
        top = max(val.values())
        leaders = [lb for lb, v in val.items() if abs(v - top) <= 1e-9 + 0.005 * top]
        what = (f"Highest rate holding {report.sweep_target:.0%} attainment (DistServe goodput, "
                "interpolated between swept rates)")  # fmt: skip
        if len(leaders) == len(val):
            lines.append(f"{what}: every run ties at {top:.2f} req/s.")
        else:
            others = ", ".join(f"{lb} {v:.2f}" for lb, v in sorted(val.items(), key=lambda kv: -kv[1])
                               if lb not in leaders)  # fmt: skip
            lines.append(f"{what}: **{' and '.join(leaders)} {top:.2f} req/s** (vs {others}).")
    return lines


def render_markdown(report: BenchReport, plots: list[Path]) -> str:
    cfg = report.config
    out = _md_head(report)
    out += _md_workload(report.workload)
    out += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2, default=str), "```", ""]
    out += ["## Summary", "", CONVENTIONS, ""]
    for section in (_md_summary, _md_prefix_cache, _md_latency, _md_warnings, _md_utilization, _md_sweep):
        out += section(report)
    out += _md_tail(report, plots)
    return "\n".join(out)


def _md_head(report: BenchReport) -> list[str]:
    """Title, the one-paragraph answer, version, seed and command."""
    out = [f"# llmplan bench report: {report.workload.get('name', '?')}", ""]
    out += [" ".join(answer(report)), ""]
    out.append(f"llmplan {report.version}, created {report.created_utc}, seed {report.seed}.")
    if report.command:
        out += ["", f"Command: `{report.command}`"]
    return out


def _md_workload(wl: dict[str, Any]) -> list[str]:
    """The workload's provenance: spec, rate, file, hash, licence."""
    out: list[str] = []
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
    return out


def _md_summary(report: BenchReport) -> list[str]:
    """One row per run: attainment, goodput, throughput, preemptions."""
    out: list[str] = []
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
    return out


def _md_prefix_cache(report: BenchReport) -> list[str]:
    """GPU prefix-cache and simulated store hit rates (runs that had them)."""
    out: list[str] = []
    pc = [(lb, m.summary["prefix_cache"]) for lb, m in report.runs.items() if m.summary.get("prefix_cache")]
    if pc:
        out += ["### Prefix cache (GPU-resident, per-instance block manager)", ""]
        out += [_table(["policy", "hit rate (prompt tokens)", "saved prefill tokens",
                        "prompt tokens looked up", "evicted blocks"],
                       [[lb, _pct(c["hit_rate"]), str(c["saved_prefill_tokens"]), str(c["query_tokens"]),
                         str(c["evictions"])] for lb, c in pc]), ""]  # fmt: skip
        st = [(lb, c["store"]) for lb, c in pc if c.get("store")]
        if st:
            out += ["Global KV store (simulated, the tier below the GPU cache: hits where it had none):", ""]
            out += [_table(["policy", "store hit tokens", "store hit rate", "blocks written",
                            "evicted blocks", "load time s"],
                           [[lb, str(c["hit_tokens"]), _pct(c["hit_rate"]), str(c["put_blocks"]),
                             str(c["evictions"]), f"{c['load_s']:.2f}"] for lb, c in st]), ""]  # fmt: skip
    return out


def _md_latency(report: BenchReport) -> list[str]:
    """Latency distributions per run and metric, in ms."""
    out: list[str] = []
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
    return out


def _md_warnings(report: BenchReport) -> list[str]:
    """Over-saturated runs and the reasons requests were rejected or failed."""
    out: list[str] = []
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
            kinds = reason_kinds(s["failure_reasons"], exact_up_to=3)
            reasons = ", ".join(f"{k} ×{v}" for k, v in kinds.items())
            out.append(f"- **{lb}**: {s['rejected']} rejected, {s['failed']} failed: {reasons}")
        out.append("")
    return out


def _md_utilization(report: BenchReport) -> list[str]:
    """Per-instance busy fraction and KV use."""
    out: list[str] = []
    out += ["### Utilization (time-weighted mean per instance)", ""]
    rows = []
    for label, m in report.runs.items():
        for inst, u in m.summary["utilization"].items():
            rows.append([label, inst, _pct(u["busy_mean"]), _pct(u["kv_mean"]), _pct(u["kv_peak"]),
                         str(u["waiting_peak"])])  # fmt: skip
    out += [_table(["policy", "instance", "busy", "KV mean", "KV peak", "waiting peak"], rows) if rows else
            "No instance samples were recorded.", ""]  # fmt: skip
    return out


def _md_sweep(report: BenchReport) -> list[str]:
    """Attainment and throughput against the swept rates, DistServe goodput."""
    out: list[str] = []
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
    return out


def _md_tail(report: BenchReport, plots: list[Path]) -> list[str]:
    """Repeats, extra sections, plots and the files written beside the report."""
    out: list[str] = []
    out += repeats_markdown(report.repeats)
    for key, section in report.extra.items():
        out += [f"## {key}", "", section if isinstance(section, str) else f"```\n{section}\n```", ""]
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.name})" for p in plots]
        out.append("")
    out += ["## Files", ""]
    out += [f"- `requests-{slug(lb)}.csv`: one row per request ({lb})" for lb in report.runs]
    out += ["- `report.json`: every number above, the full configuration and the workload provenance", ""]
    return out
