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
from llmplan.predict.interface import LengthPrediction, LengthPredictor, rank_scores_of, upper_of
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
    # What schedulers use (issue 22): the order (rank score, fallback the point estimate) and the
    # upper bound booked for KV (fallback the point estimate). None where undefined (constant scores).
    spearman: float | None = None  # rank score vs true length
    kendall: float | None = None  # Kendall tau-b, rank score vs true length
    point_coverage: float | None = None  # share with true length <= point estimate (p50: ~50%)
    upper_coverage: float | None = None  # share with true length <= upper (p90: ~90%)
    upper_short: float | None = None  # share with true length > upper: too little KV booked
    overbook_mean: float | None = None  # mean over requests of upper / max(true, 1)
    booked_per_needed: float | None = None  # sum(upper) / sum(true): KV tokens booked per token used

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


def rank_correlations(
    scores: Sequence[float], true_lengths: Sequence[int]
) -> tuple[float | None, float | None]:
    """Spearman rho and Kendall tau-b of ``scores`` against the true lengths; None when either side
    is constant (a constant predictor gives no order)."""
    from scipy.stats import kendalltau, spearmanr

    a, b = np.asarray(scores, dtype=np.float64), np.asarray(true_lengths, dtype=np.float64)
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None, None
    return float(spearmanr(a, b).statistic), float(kendalltau(a, b).statistic)


def booking_scores(upper: Sequence[float], true_lengths: Sequence[int]) -> dict[str, float]:
    """How a KV booking of ``upper`` tokens per request fares: coverage (true <= upper), short
    share, mean per-request over-booking ratio and booked tokens per needed token."""
    u, y = np.asarray(upper, dtype=np.float64), np.asarray(true_lengths, dtype=np.float64)
    if not len(y):
        nan = float("nan")
        return {"coverage": nan, "short": nan, "overbook_mean": nan, "booked_per_needed": nan}
    cov = float(np.mean(y <= u))
    return {
        "coverage": cov,
        "short": 1.0 - cov,
        "overbook_mean": float(np.mean(u / np.maximum(y, 1.0))),
        "booked_per_needed": float(u.sum() / max(y.sum(), 1.0)),
    }


def schedule_scores(pred: LengthPrediction, true_lengths: Sequence[int]) -> dict[str, float | None]:
    """The Scores fields that judge a prediction by what schedulers use: order and upper bound."""
    rho, tau = rank_correlations(rank_scores_of(pred), true_lengths)
    book = booking_scores(upper_of(pred), true_lengths)
    y = np.asarray(true_lengths)
    return {
        "spearman": rho,
        "kendall": tau,
        "point_coverage": float(np.mean(y <= np.asarray(pred.lengths))) if len(y) else None,
        "upper_coverage": book["coverage"],
        "upper_short": book["short"],
        "overbook_mean": book["overbook_mean"],
        "booked_per_needed": book["booked_per_needed"],
    }


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
    head_rows: list[HeadScores] | None = None,
) -> list[Scores]:
    """Score every predictor on every split; latency is measured once per predictor on the first split.

    ``confusion_out`` (a dict) receives :func:`confusion_json` of the first predictor on the first split;
    ``head_rows`` (a list) receives :func:`head_scores` of every learned (multi-head) predictor."""
    from llmplan import progress

    rows: list[Scores] = []
    first = next(iter(splits))
    with progress.task("evaluate", total=len(predictors) * len(splits), unit="scores") as bar:
        for pr in predictors:
            lat1 = lat32 = None
            for name, ds in splits.items():
                bar.update(description=f"evaluate {pr.name} on {name}")
                reqs = as_requests(ds)
                if head_rows is not None and hasattr(pr, "head_outputs"):
                    heads = pr.head_outputs(reqs)  # one forward pass for both tables
                    pred = pr.predict_from_heads(heads)
                    head_rows.extend(head_scores(pr, ds, name, heads))
                else:
                    pred = pr.predict(reqs)
                s = score(pred.buckets, pred.lengths, ds.output_tokens, edges, pr.name, name)
                for k, v in schedule_scores(pred, ds.output_tokens).items():
                    setattr(s, k, v)
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


@dataclass(slots=True)
class HeadScores:
    """One output of one head of a learned model on one split: what it is used for, and how it does.

    ``use`` is ``order`` (judged by Spearman/Kendall), ``point`` (coverage ~50% for a median, MAE) or
    ``upper`` (coverage, short share, over-booking)."""

    model: str
    split: str
    head: str
    output: str
    use: str
    n: int
    spearman: float | None = None
    kendall: float | None = None
    coverage: float | None = None
    mae_tokens: float | None = None
    overbook_mean: float | None = None
    booked_per_needed: float | None = None

    def row(self) -> dict[str, Any]:
        return asdict(self)


def head_scores(
    lp: Any, ds: LengthDataset, split: str, heads: dict[str, np.ndarray] | None = None
) -> list[HeadScores]:
    """Score every output of every head of a :class:`LearnedLengthPredictor` separately, beside the
    bucket head's own order / point / upper (so a multi-head model shows what each head buys).
    ``heads``: its :meth:`head_outputs` on ``ds`` when already computed."""
    y = np.asarray(ds.output_tokens, dtype=np.float64)
    h = heads if heads is not None else lp.head_outputs(ds.prompts)
    n = len(y)
    reps = np.asarray(lp.representatives, dtype=np.float64)
    edges = list(lp.bucket_edges) + [2 * lp.bucket_edges[-1]]
    proba = h["proba"]
    argmax = proba.argmax(axis=1)
    rows: list[HeadScores] = []

    def order(head: str, output: str, scores: np.ndarray) -> None:
        rho, tau = rank_correlations(scores, y)
        rows.append(HeadScores(lp.name, split, head, output, "order", n, spearman=rho, kendall=tau))

    def point(head: str, output: str, v: np.ndarray) -> None:
        cov = float(np.mean(y <= v))
        rows.append(
            HeadScores(
                lp.name,
                split,
                head,
                output,
                "point",
                n,
                coverage=cov,
                mae_tokens=float(np.mean(np.abs(v - y))),
            )
        )

    def upper(head: str, output: str, u: np.ndarray) -> None:
        b = booking_scores(u, y)
        rows.append(
            HeadScores(
                lp.name,
                split,
                head,
                output,
                "upper",
                n,
                coverage=b["coverage"],
                overbook_mean=b["overbook_mean"],
                booked_per_needed=b["booked_per_needed"],
            )
        )

    order("bucket", "argmax bucket median", reps[argmax])
    order("bucket", "expected log length", proba @ np.log1p(reps))
    point("bucket", "argmax bucket median", reps[argmax])
    upper("bucket", "argmax bucket upper edge", np.asarray(edges, dtype=np.float64)[argmax + 1])
    cum_idx = (np.cumsum(proba, axis=1) >= 0.9 - 1e-6).argmax(axis=1)
    upper(
        "bucket", "P90 of bucket distribution (upper edge)", np.asarray(edges, dtype=np.float64)[cum_idx + 1]
    )
    if "rank" in h:
        order("rank", "rank score", h["rank"])
    if "quantile" in h:
        raw, cal = lp.quantiles(h, calibrated=False), lp.quantiles(h)
        order("quantile", "p50", h["quantile"][:, 0])
        # rounded as LearnedLengthPredictor.predict rounds them (whole tokens)
        point("quantile", "p50 raw", np.round(raw[:, 0]))
        point("quantile", "p50 calibrated", np.round(cal[:, 0]))
        upper("quantile", "p90 raw", np.ceil(raw[:, 1]))
        upper("quantile", "p90 calibrated", np.ceil(cal[:, 1]))
    return rows


def render_head_table(rows: Sequence[HeadScores]) -> str:
    """Markdown table of per-head scores."""
    f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
    lines = [
        "| split | model | head | output | use | Spearman | Kendall τ | coverage (true ≤) | MAE tokens "
        "| over-booking (mean upper/true) | booked/needed |",
        "|" + "---|" * 11,
    ]
    for r in rows:
        lines.append(
            f"| {r.split} | {r.model} | {r.head} | {r.output} | {r.use} | "
            f"{f(r.spearman, '.3f')} | {f(r.kendall, '.3f')} | "
            f"{f(r.coverage, '.1%')} | {f(r.mae_tokens, '.0f')} | {f(r.overbook_mean, '.2f')} | "
            f"{f(r.booked_per_needed, '.2f')} |"
        )
    return "\n".join(lines)


def render_table(rows: Sequence[Scores]) -> str:
    """Markdown table of scores (what the docs paste)."""
    head = (
        "| split | predictor | n | exact | ±1 bucket | macro-F1 | MAE tokens | under-est. "
        "| ms/prompt b1 | ms/prompt b32 | Spearman | Kendall τ | point cov. | upper cov. | upper short "
        "| over-booking | booked/needed |"
    )
    lines = [head, "|" + "---|" * 17]
    for r in rows:
        lat = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        lines.append(
            f"| {r.split} | {r.predictor} | {r.n} | {r.exact:.1%} | {r.within1:.1%} | {r.macro_f1:.3f} | "
            f"{r.mae_tokens:.0f} | {r.underestimate:.1%} | "
            f"{lat(r.latency_ms_b1)} | {lat(r.latency_ms_b32)} | "
            f"{f(r.spearman, '.3f')} | {f(r.kendall, '.3f')} | {f(r.point_coverage, '.1%')} | "
            f"{f(r.upper_coverage, '.1%')} | {f(r.upper_short, '.1%')} | {f(r.overbook_mean, '.2f')} | "
            f"{f(r.booked_per_needed, '.2f')} |"
        )
    return "\n".join(lines)
