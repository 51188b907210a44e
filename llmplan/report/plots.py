"""PNG plots of a report (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmplan.report.model import BenchReport, slug


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def latency_cdfs(report: BenchReport, path: Path) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (col, title) in zip(
        axes, [("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")], strict=True
    ):
        for k, (label, m) in enumerate(report.runs.items()):
            v = np.sort(m.requests[col].dropna().to_numpy(dtype=np.float64))
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label, ls=["-", "--", ":", "-."][k % 4])
        ax.set_xscale("log")
        # Minor tick labels on a log axis spanning < 1 decade overlap into noise.
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{title} (s, log)")
        ax.set_ylabel("fraction of completed requests")
        ax.set_title(f"{title} CDF")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attainment_vs_rate(report: BenchReport, path: Path) -> Path | None:
    df = report.sweep_frame()
    if df.empty:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    # Distinct markers and dashes: policies that behave alike would otherwise hide each other.
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]
    for k, (label, g) in enumerate(df.groupby("label", sort=False)):
        g = g.sort_values("rate_rps")
        marker, ls = styles[k % len(styles)]
        ax.plot(g["rate_rps"], g["attainment_all"], marker=marker, ls=ls, label=label, alpha=0.85)
    ax.axhline(report.sweep_target, color="grey", ls="--", lw=1, label=f"target {report.sweep_target:.0%}")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("SLO attainment (all targets)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def utilization_over_time(report: BenchReport, label: str, path: Path) -> Path | None:
    s = report.runs[label].samples
    if s.empty:
        return None
    plt = _plt()
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(10, 7), sharex=True)
    for inst, g in s.sort_values("t_s").groupby("instance", sort=True):
        t = g["t_s"].to_numpy()
        # Per-iteration samples are dense; a rolling mean over ~1% of the run keeps lines readable.
        win = max(len(g) // 100, 1)
        busy = g["busy_frac"].rolling(win, min_periods=1).mean()
        kv = (g["kv_blocks_used"] / g["kv_blocks_total"].clip(lower=1)).rolling(win, min_periods=1).mean()
        a1.plot(t, busy, lw=0.8, label=str(inst))
        a2.plot(t, kv, lw=0.8)
        a3.plot(t, g["waiting"], lw=0.8)
    a1.set_ylabel("busy share")
    a2.set_ylabel("KV blocks used")
    a3.set_ylabel("waiting requests")
    a3.set_xlabel("time (s)")
    a1.set_title(f"{label}: per-instance utilization over time")
    if s["instance"].nunique() <= 8:
        a1.legend(ncol=4, fontsize=7)
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def policy_comparison(report: BenchReport, path: Path) -> Path:
    plt = _plt()
    labels = list(report.runs)
    sums = [report.runs[lb].summary for lb in labels]
    metrics = [
        ("SLO attainment", [s["attainment"]["all"] or 0.0 for s in sums]),
        ("goodput (req/s)", [s["goodput_rps"] for s in sums]),
        ("TTFT p99 (s)", [s["latency"]["ttft_s"]["p99"] or 0.0 for s in sums]),
        ("E2E p99 (s)", [s["latency"]["e2e_s"]["p99"] or 0.0 for s in sums]),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.8))
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, (title, vals) in zip(axes, metrics, strict=True):
        ax.bar(range(len(labels)), vals, color=colors)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_names(report: BenchReport) -> list[str]:
    """Every plot file a report can have, in the order report.md lists them."""
    names = ["latency_cdf.png", "policy_comparison.png", "attainment_vs_rate.png"]
    return names + [f"utilization_{slug(label)}.png" for label in report.runs]


def render_all(report: BenchReport, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = [
        latency_cdfs(report, out / "latency_cdf.png"),
        policy_comparison(report, out / "policy_comparison.png"),
    ]
    p = attainment_vs_rate(report, out / "attainment_vs_rate.png")
    if p:
        made.append(p)
    for label in report.runs:
        p = utilization_over_time(report, label, out / f"utilization_{slug(label)}.png")
        if p:
            made.append(p)
    return made
