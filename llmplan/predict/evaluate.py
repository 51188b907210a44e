"""Evaluation of length predictors: bucket metrics, token error, underestimates, latency, plots."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmplan.predict.buckets import bucket_labels, bucket_of
from llmplan.predict.data import LengthDataset
from llmplan.predict.interface import LengthPredictor
from llmplan.workload.types import RequestSpec


@dataclass(slots=True)
class Scores:
    predictor: str
    split: str
    n: int
    exact: float  # share of prompts in the true bucket
    within1: float  # share within one bucket of the truth
    macro_f1: float
    mae_tokens: float  # |representative length - true length|
    underestimate: float  # share with predicted bucket < true bucket (too little KV reserved)
    latency_ms_b1: float | None = None  # per prompt, batch of 1
    latency_ms_b32: float | None = None  # per prompt, batches of 32

    def row(self) -> dict[str, Any]:
        return asdict(self)


def as_requests(ds: LengthDataset) -> list[RequestSpec]:
    """Dataset examples as requests: prompt text and counted prompt tokens (learned models ignore outputs)."""
    return [
        RequestSpec(
            rid=i,
            arrival_s=0.0,
            prompt_tokens=e.prompt_tokens,
            output_tokens=e.output_tokens,
            prompt=e.prompt,
        )
        for i, e in enumerate(ds.examples)
    ]


def score(
    pred_buckets: Sequence[int],
    pred_lengths: Sequence[int],
    true_lengths: Sequence[int],
    edges: Sequence[int],
    predictor: str = "",
    split: str = "",
) -> Scores:
    from sklearn.metrics import f1_score

    y = bucket_of(np.asarray(true_lengths), edges)
    p = np.asarray(pred_buckets)
    labels = list(range(len(edges)))
    return Scores(
        predictor=predictor,
        split=split,
        n=len(y),
        exact=float(np.mean(p == y)) if len(y) else float("nan"),
        within1=float(np.mean(np.abs(p - y) <= 1)) if len(y) else float("nan"),
        macro_f1=float(
            f1_score(y, p, labels=[c for c in labels if c in set(y)], average="macro", zero_division=0)
        ),
        mae_tokens=float(np.mean(np.abs(np.asarray(pred_lengths) - np.asarray(true_lengths)))),
        underestimate=float(np.mean(p < y)) if len(y) else float("nan"),
    )


def confusion_json(
    true_lengths: Sequence[int], pred_buckets: Sequence[int], edges: Sequence[int], predictor: str, split: str
) -> dict[str, Any]:
    """The row-normalised confusion matrix (rows: true bucket, columns: predicted) with its bucket
    edges and counts: what ``bench --predictor noisy-cm:FILE`` draws from. Rows of buckets with
    no example stay all zero."""
    nb = len(edges)
    y = bucket_of(np.asarray(true_lengths), edges)
    counts = np.zeros((nb, nb), dtype=np.int64)
    np.add.at(counts, (y, np.asarray(pred_buckets, dtype=np.int64)), 1)
    norm = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    return {
        "predictor": predictor,
        "split": split,
        "n": int(len(y)),
        "bucket_edges": [int(e) for e in edges],
        "labels": bucket_labels(edges),
        "counts": counts.tolist(),
        "matrix": norm.tolist(),
    }


def replay_scores(
    pred_buckets: Sequence[int],
    pred_lengths: Sequence[int],
    true_lengths: Sequence[int],
    edges: Sequence[int],
) -> dict[str, Any]:
    """How a predictor did on replayed requests: exact and ±1 bucket accuracy, Spearman rank
    correlation of predicted vs true length (None when either side is constant), share of
    underestimated buckets."""
    from scipy.stats import spearmanr

    y = bucket_of(np.asarray(true_lengths), edges)
    p = np.asarray(pred_buckets)
    n = len(y)
    rho = None
    if n > 1 and len(set(pred_lengths)) > 1 and len(set(true_lengths)) > 1:
        rho = float(spearmanr(np.asarray(pred_lengths), np.asarray(true_lengths)).statistic)
    return {
        "n": n,
        "exact": float(np.mean(p == y)) if n else None,
        "within1": float(np.mean(np.abs(p - y) <= 1)) if n else None,
        "spearman": rho,
        "underestimate": float(np.mean(p < y)) if n else None,
    }


def measure_latency(predictor: LengthPredictor, items: Sequence[Any], batch: int, n: int = 64) -> float:
    """Milliseconds per prompt when predicting ``n`` prompts in batches of ``batch`` (after one warm-up)."""
    items = list(items)[:n]
    if not items:
        return float("nan")
    predictor.predict(items[:batch])
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        predictor.predict(items[s : s + batch])
    return (time.perf_counter() - t0) * 1e3 / len(items)


def evaluate(
    predictors: Sequence[LengthPredictor],
    splits: dict[str, LengthDataset],
    edges: Sequence[int],
    latency_n: int = 64,
    confusion_png: str | Path | None = None,
    confusion_out: dict[str, Any] | None = None,
) -> list[Scores]:
    """Score every predictor on every split; latency is measured once per predictor on the first split.

    ``confusion_out`` (a dict) receives :func:`confusion_json` of the first predictor on the first split."""
    from llmplan import progress

    rows: list[Scores] = []
    first = next(iter(splits))
    with progress.task("evaluate", total=len(predictors) * len(splits), unit="scores") as bar:
        for pr in predictors:
            lat1 = lat32 = None
            for name, ds in splits.items():
                bar.update(description=f"evaluate {pr.name} on {name}")
                reqs = as_requests(ds)
                pred = pr.predict(reqs)
                s = score(pred.buckets, pred.lengths, ds.output_tokens, edges, pr.name, name)
                if name == first and latency_n:
                    lat1 = measure_latency(pr, reqs, 1, n=min(latency_n, 32))
                    lat32 = measure_latency(pr, reqs, 32, n=latency_n)
                s.latency_ms_b1, s.latency_ms_b32 = lat1, lat32
                rows.append(s)
                if confusion_out is not None and pr is predictors[0] and name == first:
                    confusion_out.update(confusion_json(ds.output_tokens, pred.buckets, edges, pr.name, name))
                if confusion_png and pr is predictors[0] and name == first:
                    plot_confusion(
                        ds.output_tokens, pred.buckets, edges, confusion_png, title=f"{pr.name} on {name}"
                    )
                bar.advance()
    return rows


def plot_confusion(
    true_lengths: Sequence[int],
    pred_buckets: Sequence[int],
    edges: Sequence[int],
    path: str | Path,
    title: str = "",
) -> Path:
    from sklearn.metrics import confusion_matrix

    from llmplan.plotting import pyplot, save_figure

    plt = pyplot()

    labels = bucket_labels(edges)
    cm = confusion_matrix(
        bucket_of(np.asarray(true_lengths), edges), pred_buckets, labels=list(range(len(edges)))
    )
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    str(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted bucket (tokens)")
    ax.set_ylabel("true bucket (tokens)")
    ax.set_title(title or "confusion matrix (row-normalised colour, counts)")
    return save_figure(fig, path, dpi=90)


def render_table(rows: Sequence[Scores]) -> str:
    """Markdown table of scores (what the docs paste)."""
    head = (
        "| split | predictor | n | exact | ±1 bucket | macro-F1 | MAE tokens | under-est. "
        "| ms/prompt b1 | ms/prompt b32 |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lat = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(
            f"| {r.split} | {r.predictor} | {r.n} | {r.exact:.1%} | {r.within1:.1%} | {r.macro_f1:.3f} | "
            f"{r.mae_tokens:.0f} | {r.underestimate:.1%} | {lat(r.latency_ms_b1)} | {lat(r.latency_ms_b32)} |"
        )
    return "\n".join(lines)
