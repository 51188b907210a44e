"""The rich summary printed at the end of ``llmplan bench`` and by ``llmplan report``."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from llmplan.metrics.requests import SLO_KINDS
from llmplan.metrics.summary import reason_kinds
from llmplan.report.model import BenchReport, throughput_rows


def _t(v: float | None) -> str:
    """A duration with a unit that keeps it short: 42 ms, 3.49 s, 141 s, 2.3 h."""
    if v is None:
        return "-"
    if v < 1.0:
        return f"{v * 1e3:.0f} ms"
    if v < 100.0:
        return f"{v:.2f} s"
    if v < 10_000.0:
        return f"{v:.0f} s"
    return f"{v / 3600:.1f} h"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def summary_table(report: BenchReport) -> Table:
    """Metrics as rows, runs as columns: narrow enough for any terminal, easy to compare across."""
    wl = report.workload
    title = f"{wl.get('name', '?')}: {wl.get('requests', '?')} requests"
    if wl.get("offered_rate_rps"):
        title += f" at {wl['offered_rate_rps']:.2f} req/s"
        if wl.get("time_scale") and wl.get("trace_offered_rate_rps"):
            title += f" (trace {wl['trace_offered_rate_rps']:.2f} req/s x --time-scale {wl['time_scale']:g})"
    t = Table(title=title, title_style="bold", header_style="bold cyan")
    t.add_column("metric")
    runs = list(report.runs.items())
    for label, m in runs:
        sat = m.summary["saturation"]["oversaturated"]
        t.add_column(label + ("\n[bold red]SATURATED[/]" if sat else ""), justify="right")
    best = max((m.summary["attainment"]["all"] or 0.0) for _, m in runs) if runs else 0.0

    def row(name: str, fn, end_section: bool = False) -> None:
        t.add_row(name, *(fn(m.summary) for _, m in runs), end_section=end_section)

    def att_all(s: dict) -> str:
        v = s["attainment"]["all"]
        txt = _pct(v)
        return f"[bold green]{txt}[/]" if v is not None and v == best and len(runs) > 1 else txt

    def lat(key: str, conv: Callable[[float | None], str]) -> Callable[[dict], str]:
        return lambda s: f"{conv(s['latency'][key]['p50'])} / {conv(s['latency'][key]['p99'])}"

    row("completed", lambda s: f"{s['completed']}/{s['requests']}")
    # Requests a server refuses (context length, queue full) are counted, never dropped.
    row("rejected / failed", lambda s: f"{s.get('rejected', 0)} / {s.get('failed', 0)}")
    row("SLO attainment (all)", att_all)
    row("  TTFT / TPOT / E2E", lambda s: " / ".join(_pct(s["attainment"][k]) for k in SLO_KINDS))
    row("goodput (req/s)", lambda s: f"{s['goodput_rps']:.2f}")
    row("throughput (req/s)", lambda s: f"{s['throughput_rps']:.2f}")
    row("output tok/s", lambda s: f"{s['output_tokens_per_s']:.0f}", end_section=True)
    row("TTFT p50 / p99", lat("ttft_s", _t))
    row("TPOT p50 / p99", lat("tpot_s", _t))
    row("ITL p50 / p99", lat("itl_s", _t))
    row("E2E p50 / p99", lat("e2e_s", _t))
    row("queueing p50 / p99", lat("queueing_s", _t), end_section=True)
    if any(m.summary.get("prefix_cache") for _, m in runs):
        row("prefix cache hit rate", lambda s: _pct((s.get("prefix_cache") or {}).get("hit_rate")))
        row("  saved prefill tokens",
            lambda s: str((s.get("prefix_cache") or {}).get("saved_prefill_tokens", "-")))  # fmt: skip
        if any((m.summary.get("prefix_cache") or {}).get("store") for _, m in runs):
            row("  KV store hit tokens (rate)", _store_hits)
    row("preemptions", lambda s: str(s["preemptions"]))
    if any((m.summary.get("counters") or {}).get("mispredictions") for _, m in runs):
        # Requests that outgrew their predicted bound (grew their KV booking on demand), and the
        # preemptions such growth forced.
        row("  outgrew prediction (preempted)", lambda s: "{} ({})".format(
            (s.get("counters") or {}).get("mispredictions", 0),
            (s.get("counters") or {}).get("misprediction_preemptions", 0)))  # fmt: skip
    row("padding tokens", lambda s: str(s["padding_tokens"]))
    if any(m.summary.get("energy") for _, m in runs):
        t.rows[-1].end_section = True
        row("energy / request (J, modelled)", lambda s: _j(s, "energy_per_request_j", "{:.1f}"))
        row("energy / output token (J)", lambda s: _j(s, "energy_per_output_token_j", "{:.3f}"))
        row("prefill / decode / idle (kJ)", lambda s: " / ".join(
            _j(s, k, "{:.1f}", 1e-3) for k in ("prefill_energy_j", "decode_energy_j", "idle_energy_j")))
        row("avg power (W) / mean SM MHz", lambda s: f"{_j(s, 'avg_power_w', '{:.0f}')} / "
            f"{_j(s, 'mean_clock_mhz', '{:.0f}')}")
    return t


def _store_hits(s: dict) -> str:
    st = (s.get("prefix_cache") or {}).get("store")
    return "-" if not st else f"{st['hit_tokens']} ({_pct(st['hit_rate'])})"


def _j(s: dict, key: str, fmt: str, scale: float = 1.0) -> str:
    v = (s.get("energy") or {}).get(key)
    return "-" if v is None else fmt.format(v * scale)


def repeats_table(report: BenchReport) -> Table | None:
    """``--repeat K``: mean ± 95% CI per headline metric, then the paired comparisons' verdicts."""
    from llmplan.report.repeats import comparison_rows, rows

    if not report.repeats:
        return None
    rp = report.repeats
    header, body = rows(rp)
    t = Table(title=f"{rp['k']} seeds ({', '.join(map(str, rp['seeds']))}): mean ± {rp['confidence']:.0%} CI",
              header_style="bold cyan")  # fmt: skip
    for h in header:
        t.add_column(h, justify="left" if h == "metric" else "right")
    for r in body:
        t.add_row(*r)
    labels = header[1:]
    by_metric: dict[str, dict[str, str]] = {}
    for metric, pair, diff, verdict in comparison_rows(rp)[1]:
        colour = {"better": "green", "worse": "red"}.get(verdict, "yellow")
        by_metric.setdefault(metric, {})[pair.split(" − ")[0]] = f"{diff} [{colour}]{verdict}[/]"
    if by_metric and t.rows:
        t.rows[-1].end_section = True
    for metric, cells in by_metric.items():
        base = f"vs {labels[0]}" if labels else ""
        t.add_row(f"{metric}: paired diff", *(cells.get(lb, base) for lb in labels))
    return t


def sweep_table(report: BenchReport) -> Table | None:
    df = report.sweep_frame()
    if df.empty:
        return None
    labels = list(dict.fromkeys(df["label"]))
    t = Table(title=f"SLO attainment vs rate (target {report.sweep_target:.0%})", header_style="bold cyan")
    t.add_column("req/s", justify="right")
    for lb in labels:
        t.add_column(lb, justify="right")
    for rate, g in df.groupby("rate_rps", sort=True):
        by = dict(zip(g["label"], g["attainment_all"], strict=True))
        cells = []
        for lb in labels:
            v = by.get(lb)
            cell = _pct(v)
            if v is not None and v < report.sweep_target:
                cell = f"[red]{cell}[/]"
            cells.append(cell)
        t.add_row(f"{rate:.2f}", *cells)
    return t


def throughput_table(report: BenchReport) -> Table | None:
    header, rows = throughput_rows(report)
    if not rows:
        return None
    t = Table(title="Output throughput vs rate (tokens/s over the makespan)", header_style="bold cyan")
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*r)
    return t


def distserve_line(report: BenchReport) -> str | None:
    gp = []
    for lb, g in report.goodput_distserve.items():
        if g["rate_rps"] is None:
            gp.append(f"{lb} < lowest swept rate")
        else:
            more = " (every rate passed)" if g["all_pass"] else ""
            gp.append(f"{lb} {g['rate_rps']:g} req/s{more}")
    if not gp:
        return None
    return f"DistServe goodput (highest rate with attainment >= {report.sweep_target:.0%}): " + ", ".join(gp)


def print_report(report: BenchReport, console: Console) -> None:
    meta = report.workload.get("meta", {})
    if meta.get("sha256_matches") is False:
        console.print(
            f"[bold yellow]WARNING[/] {meta.get('path')}: sha256 {str(meta.get('sha256'))[:12]}... differs "
            f"from the published {str(meta.get('sha256_expected'))[:12]}...; results are not comparable to "
            "other runs"
        )
    console.print(summary_table(report))
    rt = repeats_table(report)
    if rt is not None:
        console.print(rt)
    ps = report.config.get("predictor_scores")
    if ps:
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        rho = "- (constant)" if ps["spearman"] is None else f"{ps['spearman']:.3f}"
        console.print(
            f"predictor {ps['predictor']} on the {ps['n']} replayed requests: exact bucket "
            f"{pct(ps['exact'])}, ±1 bucket {pct(ps['within1'])}, Spearman {rho}, "
            f"under-estimated {pct(ps['underestimate'])}",
            highlight=False,
        )
    st = sweep_table(report)
    if st is not None:
        console.print(st)
        line = distserve_line(report)
        if line:
            console.print(line)
        tt = throughput_table(report)
        if tt is not None:
            console.print(tt)
    for label, m in report.runs.items():
        sat = m.summary["saturation"]
        if sat["oversaturated"]:
            console.print(
                f"[bold red]WARNING[/] {label}: the system is over-saturated at this rate "
                f"({'; '.join(sat['reasons'])}); latency figures grow with the run length, "
                "lower --rate-scale or add instances."
            )
        if m.summary["rejected"] or m.summary["failed"]:
            kinds = reason_kinds(m.summary["failure_reasons"], exact_up_to=3)
            reasons = ", ".join(f"{k} x{v}" for k, v in kinds.items())
            console.print(
                f"[yellow]note[/] {label}: {m.summary['rejected']} rejected, {m.summary['failed']} failed "
                f"({reasons}); excluded from latency stats, counted as SLO misses."
            )
