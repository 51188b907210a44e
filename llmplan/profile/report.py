"""Fit-and-evaluate in one call, and its markdown rendering (what `profile fit` prints and saves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from llmplan.errors import LlmplanError
from llmplan.profile.cluster import plot_elbow
from llmplan.profile.features import METRICS
from llmplan.profile.profiler import ResourceProfiler, check_frame, compare, split_frame


def read_csv(path: str | Path) -> pd.DataFrame:
    p = Path(path)
    if not p.is_file():
        what = "is a directory" if p.is_dir() else "does not exist"
        raise LlmplanError(f"profile data {p} {what}; collect it with `llmplan profile collect --out {p}`")
    try:
        df = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise LlmplanError(
            f"{p} is not a readable CSV ({type(exc).__name__}); regenerate it with `llmplan profile collect`"
        ) from None
    check_frame(df, str(p))
    return df


def fit_and_evaluate(
    df: pd.DataFrame,
    out: str | Path,
    *,
    k: int | None = None,
    gamma: float = 0.5,
    seed: int = 0,
    test_frac: float = 0.25,
    n_estimators: int = 100,
) -> dict[str, Any]:
    train, test = split_frame(df, test_frac, seed)
    if len(test) == 0:
        raise LlmplanError("the test split is empty; collect more rows or raise --test-frac")
    prof = ResourceProfiler.fit(train, k=k, gamma=gamma, seed=seed, n_estimators=n_estimators)
    out = Path(out)
    prof.save(out)
    if prof.elbow:
        plot_elbow(prof.elbow["k"], prof.elbow["cost"], prof.k, out / "elbow.png")
    result = {
        "k": prof.k,
        "gamma": prof.gamma,
        "train_rows": len(train),
        "test_rows": len(test),
        "elbow": prof.elbow,
        "clusters": prof.description,
        "within_10pct": compare(prof, test),
    }
    (out / "report.json").write_text(json.dumps(result, indent=2))
    (out / "report.md").write_text(render(result) + "\n")
    return result


def render(result: dict[str, Any]) -> str:
    lines = [
        f"K = {result['k']} (gamma {result['gamma']}), train {result['train_rows']} rows, "
        f"test {result['test_rows']} rows",
        "",
        "| metric | profiler: share with rel. error < 10% | global model | profiler MAPE | global MAPE |",
        "|---|---|---|---|---|",
    ]
    for r in result["within_10pct"]:
        lines.append(
            f"| {r['metric']} | {r['profiler']:.1%} | {r['global']:.1%} | {r['profiler_mape']:.1%} | "
            f"{r['global_mape']:.1%} |"
        )
    lines += [
        "",
        "| cluster | size | centroid (in tok, out tok, task, lang) | "
        + " | ".join(f"{m} mean±std" for m in METRICS)
        + " | models |",
        "|" + "---|" * (4 + len(METRICS)),
    ]
    for c in result["clusters"]:
        ce = c["centroid"]
        stats = " | ".join(f"{c[m]['mean']:.4g}±{c[m]['std']:.2g}" for m in METRICS)
        models = ", ".join(f"{m}:{v}" for m, v in c["model"].items())
        lines.append(
            f"| {c['cluster']} | {c['size']} | {ce['input_tokens']:.0f}, {ce['output_tokens_est']:.0f}, "
            f"{ce['task']}, {ce['lang']} | {stats} | {models} |"
        )
    vr = result["clusters"][0]["variance_reduction"] if result["clusters"] else {}
    lines += [
        "",
        "Variance explained by the clusters alone (1 - within-cluster var / global var): "
        + ", ".join(f"{m} {v:.1%}" for m, v in vr.items()),
    ]
    return "\n".join(lines)
