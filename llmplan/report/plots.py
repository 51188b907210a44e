"""PNG plots of a report (matplotlib, Agg backend, imported only when plotting)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmplan.plotting import pyplot, save_figure
from llmplan.report.model import BenchReport, slug


def latency_cdfs(report: BenchReport, path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    from matplotlib.ticker import NullFormatter

    for ax, (col, title) in zip(
        axes, [("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "end-to-end")], strict=True
    ):
        lo, hi = np.inf, 0.0
        for k, (label, m) in enumerate(report.runs.items()):
            v = np.sort(m.requests[col].dropna().to_numpy(dtype=np.float64))
            if len(v):
                ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label, ls=["-", "--", ":", "-."][k % 4])
                pos = v[v > 0]
                if len(pos):
                    lo, hi = min(lo, float(pos[0])), max(hi, float(pos[-1]))
        # Log only when the values span more than ~1.5 decades; a narrower log axis has no
        # labelled ticks at all (minor labels overlap, so they are off).
        if hi > 0 and np.isfinite(lo) and hi / lo > 30:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(f"{title} (s, log scale)")
        else:
            ax.set_xlabel(f"{title} (s)")
        ax.set_ylabel("fraction of completed requests")
        ax.set_title(f"{title} CDF")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("latency distributions (completed requests; failed and rejected ones are not drawn)",
                 fontsize=10)  # fmt: skip
    return save_figure(fig, path, dpi=110)


def attainment_vs_rate(report: BenchReport, path: Path) -> Path | None:
    df = report.sweep_frame()
    if df.empty:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    # Distinct markers and dashes: policies that behave alike would otherwise hide each other.
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]
    for k, (label, g) in enumerate(df.groupby("label", sort=False)):
        g = g.sort_values("rate_rps")
        marker, ls = styles[k % len(styles)]
        ax.plot(g["rate_rps"], g["attainment_all"], marker=marker, ls=ls, label=label, alpha=0.85)
    ax.axhline(report.sweep_target, color="grey", ls="--", lw=1, label=f"target {report.sweep_target:.0%}")
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("SLO attainment\n(share of requests meeting every SLO)")
    ax.set_title("SLO attainment vs offered rate\n(where a line crosses the target: its DistServe goodput)",
                 fontsize=9)  # fmt: skip
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path, dpi=110)


def _binned(g, edges: np.ndarray) -> dict[str, np.ndarray]:
    """One instance's samples reduced to time bins: the peak KV and queue, the mean batch.

    Samples come every sample interval; an hour-long run has tens of thousands, which draw as a
    solid band (or a barcode of 0/1 spikes for the queue). Per bin, the KV and waiting panels keep
    the **maximum**, so the plotted peak is the real peak, and the batch panel the mean.
    """
    t = g["t_s"].to_numpy(dtype=np.float64)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
    used = g["kv_blocks_used"].to_numpy(dtype=np.float64)
    kv = 100.0 * used / np.maximum(g["kv_blocks_total"].to_numpy(), 1)
    n = len(edges) - 1
    out = {"kv": np.full(n, np.nan), "waiting": np.full(n, np.nan), "running": np.full(n, np.nan)}
    waiting = g["waiting"].to_numpy(dtype=np.float64)
    running = g["running"].to_numpy(dtype=np.float64)
    for b in np.unique(idx):
        m = idx == b
        out["kv"][b] = kv[m].max()
        out["waiting"][b] = waiting[m].max()
        out["running"][b] = running[m].mean()
    return out


def utilization_over_time(report: BenchReport, label: str, path: Path) -> Path | None:
    s = report.runs[label].samples
    if s.empty:
        return None
    plt = pyplot()
    util = report.runs[label].summary.get("utilization", {})
    t0, t1 = float(s["t_s"].min()), float(s["t_s"].max())
    nbins = 120
    edges = np.linspace(t0, t1 if t1 > t0 else t0 + 1.0, nbins + 1)
    width = (edges[1] - edges[0]) if nbins else 1.0
    mid = (edges[:-1] + edges[1:]) / 2
    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(12, 8.5), sharex=True)
    for k, (inst, g) in enumerate(s.sort_values("t_s").groupby("instance", sort=True)):
        b = _binned(g, edges)
        color = f"C{k % 10}"
        u = util.get(str(inst), {})
        busy = u.get("busy_mean")
        name1 = f"{inst}: computing {busy:.0%} of the time" if busy is not None else str(inst)
        a1.step(mid, b["running"], where="mid", lw=1, color=color, label=name1)
        # The real peak (over every sample, not a smoothed curve), marked and in the legend.
        kv_all = (100.0 * g["kv_blocks_used"] / g["kv_blocks_total"].clip(lower=1)).to_numpy()
        j = int(np.argmax(kv_all))
        kv_mean = u.get("kv_mean")
        name2 = f"{inst}: peak {kv_all[j]:.1f}%" + (f", mean {kv_mean:.1%}" if kv_mean is not None else "")
        a2.step(mid, b["kv"], where="mid", lw=1, color=color, label=name2)
        a2.plot([float(g["t_s"].iloc[j])], [kv_all[j]], marker="v", color=color, ms=6, ls="none")
        a3.step(mid, b["waiting"], where="mid", lw=1, color=color,
                label=f"{inst}: peak {int(g['waiting'].max())}")  # fmt: skip
    a1.set_ylabel("running requests\n(batch; mean per bin)")
    a1.set_ylim(bottom=0)
    a1.set_title("batch size per instance (the legend: share of the run with a batch step in flight)",
                 fontsize=9)  # fmt: skip
    a2.set_ylabel("KV cache blocks used (%)\n(max per bin)")
    a2.set_ylim(0, 105)
    a2.set_title("KV cache occupancy per instance; ▼ marks each instance's peak sample", fontsize=9)
    a3.set_ylabel("waiting requests\n(max per bin)")
    a3.set_ylim(bottom=0)
    a3.set_title("requests queued, not yet admitted", fontsize=9)
    a3.set_xlabel(f"time since the first arrival (s); {nbins} bins of {width:.1f} s")
    fig.suptitle(f"{label}: batch, KV cache and queue per instance over time", fontsize=11)
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
        if s["instance"].nunique() <= 12:
            a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_figure(fig, path, dpi=100)


def policy_comparison(report: BenchReport, path: Path) -> Path:
    plt = pyplot()
    labels = list(report.runs)
    sums = [report.runs[lb].summary for lb in labels]
    # (title, y label, values, value format); lower is better for the latencies.
    metrics = [
        ("SLO attainment (higher is better)", "% of requests meeting every SLO",
         [100 * (s["attainment"]["all"] or 0.0) for s in sums], "{:.1f}%"),
        ("goodput (higher is better)", "req/s meeting every SLO",
         [s["goodput_rps"] for s in sums], "{:.2f}"),
        ("TTFT p99 (lower is better)", "seconds",
         [s["latency"]["ttft_s"]["p99"] or 0.0 for s in sums], "{:.2f} s"),
        ("E2E p99 (lower is better)", "seconds",
         [s["latency"]["e2e_s"]["p99"] or 0.0 for s in sums], "{:.1f} s"),
    ]  # fmt: skip
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 4.0))
    colors = [f"C{i}" for i in range(len(labels))]
    for ax, (title, ylabel, vals, fmt) in zip(axes, metrics, strict=True):
        bars = ax.bar(range(len(labels)), vals, color=colors)
        ax.bar_label(bars, labels=[fmt.format(v) for v in vals], fontsize=7, padding=2)
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_ylim(0, max(max(vals, default=0) * 1.15, 1e-9))
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("runs side by side on the identical workload", fontsize=11)
    return save_figure(fig, path, dpi=110)


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
