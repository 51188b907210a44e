"""``bench --repeat K``: headline metrics over K seeds as mean and 95% t-interval, and paired
comparisons that call a difference whose interval contains zero a tie.

Each seed redraws what the seed drives (synthetic arrivals, SLO draws, predictor noise); every
label runs on the same K workloads, so label B is compared with label A seed by seed (paired
differences), which removes the workload-to-workload noise both share.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmplan.report.mdtable import md_table

CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Headline:
    key: str
    label: str
    get: Callable[[dict[str, Any]], float | None]
    higher_is_better: bool
    unit: str  # "%", "s", "rps", "tok/s", "count"


def _lat(name: str, stat: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda s: s["latency"][name][stat]


HEADLINES: tuple[Headline, ...] = (
    Headline("attainment_all", "SLO attainment (all)", lambda s: s["attainment"]["all"], True, "%"),
    Headline("goodput_rps", "goodput (req/s)", lambda s: s["goodput_rps"], True, "rps"),
    Headline("throughput_rps", "throughput (req/s)", lambda s: s["throughput_rps"], True, "rps"),
    Headline("output_tokens_per_s", "output tok/s", lambda s: s.get("output_tokens_per_s"), True, "tok/s"),
    Headline("ttft_p50_s", "TTFT p50", _lat("ttft_s", "p50"), False, "s"),
    Headline("ttft_p99_s", "TTFT p99", _lat("ttft_s", "p99"), False, "s"),
    Headline("tpot_p50_s", "TPOT p50", _lat("tpot_s", "p50"), False, "s"),
    Headline("tpot_p99_s", "TPOT p99", _lat("tpot_s", "p99"), False, "s"),
    Headline("e2e_p99_s", "E2E p99", _lat("e2e_s", "p99"), False, "s"),
    Headline("preemptions", "preemptions", lambda s: s.get("preemptions"), False, "count"),
    Headline("prefix_hit_rate", "prefix cache hit rate",
             lambda s: (s.get("prefix_cache") or {}).get("hit_rate"), True, "%"),  # fmt: skip
    Headline("store_hit_rate", "KV store hit rate",
             lambda s: ((s.get("prefix_cache") or {}).get("store") or {}).get("hit_rate"),
             True, "%"),  # fmt: skip
)


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean and two-sided Student-t interval of ``values`` (None entries dropped); ``half`` is
    None with fewer than two values (no spread to estimate)."""
    from scipy import stats

    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": None, "half": None, "lo": None, "hi": None, "values": []}
    mean = sum(v) / n
    if n < 2:
        return {"n": 1, "mean": mean, "half": None, "lo": None, "hi": None, "values": v}
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "half": half, "lo": mean - half, "hi": mean + half, "values": v}


def paired_difference(a: float, b: float) -> float:
    """``b - a``, exactly 0 when the two agree to float noise (1e-9 relative): two runs that give
    the same number through different summation orders are a tie, not a 1e-17 "win"."""
    if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
        return 0.0
    return b - a


def verdict(diff: dict[str, Any], higher_is_better: bool) -> str:
    """better / worse / tie for a paired difference (B - A): a tie when its interval holds 0."""
    if diff["mean"] is None or diff["half"] is None:
        return "n/a"
    if diff["lo"] <= 0.0 <= diff["hi"]:
        return "tie"
    return "better" if (diff["mean"] > 0) == higher_is_better else "worse"


def aggregate(per_seed: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    """``per_seed[label]`` = that label's run summaries, one per seed in ``seeds`` order."""
    labels = list(per_seed)
    metrics = {
        lb: {h.key: t_interval([h.get(s) for s in sums]) for h in HEADLINES} for lb, sums in per_seed.items()
    }
    comparisons = []
    base = labels[0] if labels else None
    for lb in labels[1:]:
        for h in HEADLINES:
            pairs = [(h.get(a), h.get(b)) for a, b in zip(per_seed[base], per_seed[lb], strict=True)]
            d = t_interval([paired_difference(a, b) for a, b in pairs if a is not None and b is not None])
            comparisons.append({"label": lb, "baseline": base, "metric": h.key, "diff": d,
                                "verdict": verdict(d, h.higher_is_better)})  # fmt: skip
    return {
        "k": len(seeds),
        "seeds": list(seeds),
        "confidence": CONFIDENCE,
        "method": "mean over seeds, two-sided Student-t interval; comparisons on paired per-seed differences "
        "(label - baseline), a tie when the difference's interval contains 0",
        "metrics": metrics,
        "comparisons": comparisons,
    }


def fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "%":
        return f"{v * 100:.1f}%"
    if unit == "s":
        return f"{v * 1e3:.0f} ms" if abs(v) < 1.0 else f"{v:.2f} s"
    if unit == "tok/s":
        return f"{v:.0f}"
    if unit == "count":
        return f"{v:.1f}"
    return f"{v:.3f}"


def fmt_interval(iv: dict[str, Any], unit: str) -> str:
    if iv["mean"] is None:
        return "–"
    if iv["half"] is None:
        return fmt_value(iv["mean"], unit)
    half = fmt_value(iv["half"], unit).replace("%", " pt") if unit == "%" else fmt_value(iv["half"], unit)
    return f"{fmt_value(iv['mean'], unit)} ± {half}"


def rows(repeats: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The mean ± half-width table: metrics as rows, labels as columns."""
    metrics = repeats.get("metrics") or {}
    labels = list(metrics)
    header = ["metric", *labels]
    out = [[h.label, *(fmt_interval(metrics[lb][h.key], h.unit) for lb in labels)]
           for h in HEADLINES if any((metrics[lb].get(h.key) or {}).get("mean") is not None
                                     for lb in labels)]  # fmt: skip
    return header, out


def comparison_rows(repeats: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    units = {h.key: (h.label, h.unit) for h in HEADLINES}
    header = ["metric", "comparison", "difference (95% CI)", "verdict"]
    out = []
    for c in repeats.get("comparisons") or []:
        name, unit = units.get(c["metric"], (c["metric"], ""))
        d = c["diff"]
        if d["mean"] is None:
            continue  # a metric no run has (e.g. the prefix cache on a trace without token ids)
        if d["mean"] is None:
            cell = "–"
        elif d["half"] is None:
            cell = _signed(d["mean"], unit)
        else:
            cell = f"{_signed(d['mean'], unit)} [{_signed(d['lo'], unit)}, {_signed(d['hi'], unit)}]"
        out.append([name, f"{c['label']} − {c['baseline']}", cell, c["verdict"]])
    return header, out


def _signed(v: float, unit: str) -> str:
    txt = fmt_value(abs(v), unit)
    if unit == "%":
        txt = txt.replace("%", " pt")
    return ("+" if v >= 0 else "−") + txt


def markdown(repeats: dict[str, Any]) -> list[str]:
    if not repeats:
        return []
    k, conf = repeats["k"], repeats["confidence"]
    out = [f"## Repeated runs: {k} seeds ({', '.join(map(str, repeats['seeds']))}), mean ± {conf:.0%} CI", ""]
    out += [f"Each seed redraws synthetic arrivals, SLO draws and predictor noise; {repeats['method']}. "
            "The tables above show the first seed's run.", ""]  # fmt: skip
    header, body = rows(repeats)
    out += [md_table(header, body), ""]
    header, body = comparison_rows(repeats)
    if body:
        out += ["Paired comparisons (a difference whose interval contains 0 is a **tie**):", "",
                md_table(header, body), ""]  # fmt: skip
    return out
