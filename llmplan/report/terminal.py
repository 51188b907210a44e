"""The rich summary printed at the end of ``llmplan bench`` and by ``llmplan report``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from llmplan.report.model import BenchReport


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v * 1e3:.0f}" if v < 10 else f"{v * 1e3:.3g}")


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def summary_table(report: BenchReport) -> Table:
    wl = report.workload
    title = f"{wl.get('name', '?')}: {wl.get('requests', '?')} requests"
    if wl.get("offered_rate_rps"):
        title += f" at {wl['offered_rate_rps']:.2f} req/s"
    t = Table(title=title, title_style="bold", header_style="bold cyan")
    t.add_column("policy")
    t.add_column("done", justify="right")
    t.add_column("SLO att.", justify="right")
    t.add_column("TTFT att.", justify="right")
    t.add_column("TPOT att.", justify="right")
    t.add_column("E2E att.", justify="right")
    t.add_column("goodput\nreq/s", justify="right")
    t.add_column("output\ntok/s", justify="right")
    t.add_column("TTFT ms\np50 / p99", justify="right")
    t.add_column("TPOT ms\np50 / p99", justify="right")
    t.add_column("E2E s\np50 / p99", justify="right")
    t.add_column("preempt", justify="right")
    t.add_column("pad tok", justify="right")
    best = max((m.summary["attainment"]["all"] or 0.0) for m in report.runs.values()) if report.runs else 0.0
    for label, m in report.runs.items():
        s = m.summary
        lat, att = s["latency"], s["attainment"]
        name = label + (" [bold red]SATURATED[/]" if s["saturation"]["oversaturated"] else "")
        a = _pct(att["all"])
        if att["all"] is not None and att["all"] == best and len(report.runs) > 1:
            a = f"[bold green]{a}[/]"
        t.add_row(
            name,
            f"{s['completed']}/{s['requests']}",
            a,
            _pct(att["ttft"]),
            _pct(att["tpot"]),
            _pct(att["e2e"]),
            f"{s['goodput_rps']:.2f}",
            f"{s['output_tokens_per_s']:.0f}",
            f"{_ms(lat['ttft_s']['p50'])} / {_ms(lat['ttft_s']['p99'])}",
            f"{_ms(lat['tpot_s']['p50'])} / {_ms(lat['tpot_s']['p99'])}",
            f"{_s(lat['e2e_s']['p50'])} / {_s(lat['e2e_s']['p99'])}",
            str(s["preemptions"]),
            str(s["padding_tokens"]),
        )
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
    gp = [
        f"{lb}: {g['rate_rps']:.2f}" + (" (all passed)" if g["all_pass"] else "")
        if g["rate_rps"] is not None
        else f"{lb}: < lowest rate"
        for lb, g in report.goodput_distserve.items()
    ]
    if gp:
        t.caption = "DistServe goodput (req/s): " + ", ".join(gp)
    return t


def print_report(report: BenchReport, console: Console) -> None:
    console.print(summary_table(report))
    st = sweep_table(report)
    if st is not None:
        console.print(st)
    for label, m in report.runs.items():
        sat = m.summary["saturation"]
        if sat["oversaturated"]:
            console.print(
                f"[bold red]WARNING[/] {label}: the system is over-saturated at this rate "
                f"({'; '.join(sat['reasons'])}); latency figures grow with the run length, "
                "lower --rate-scale or add instances."
            )
        if m.summary["rejected"] or m.summary["failed"]:
            reasons = ", ".join(f"{k} x{v}" for k, v in m.summary["failure_reasons"].items())
            console.print(
                f"[yellow]note[/] {label}: {m.summary['rejected']} rejected, {m.summary['failed']} failed "
                f"({reasons}); excluded from latency stats, counted as SLO misses."
            )
