"""Oracle length predictors for experiments: the truth, and the truth with a set accuracy.

Both read ``RequestSpec.output_tokens``; they exist to measure how much a length-aware policy
gains from a perfect predictor and how it degrades as accuracy drops, beside the learned
predictor behind the same :class:`~llmplan.predict.interface.LengthPredictor` interface.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES, LengthPrediction, PromptLike
from llmplan.workload.types import RequestSpec


def _specs(items: Sequence[PromptLike], who: str) -> list[RequestSpec]:
    out = []
    for it in items:
        if not isinstance(it, RequestSpec):
            raise LlmplanError(
                f"{who} reads the true output length from RequestSpec objects, got {type(it).__name__}; "
                "pass RequestSpec items or use a learned predictor for raw prompts"
            )
        out.append(it)
    return out


def _bucket_index(lengths: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges), lengths, side="right") - 1


class OraclePredictor:
    """The exact output length; the bucket is the one it falls in."""

    def __init__(self, bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> None:
        self.bucket_edges = tuple(bucket_edges)
        self.name = "oracle"

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        specs = _specs(items, "OraclePredictor")
        lengths = np.fromiter((s.output_tokens for s in specs), dtype=np.int64, count=len(specs))
        ln = lengths.tolist()
        # The truth is its own rank and its own (tight) upper bound.
        return LengthPrediction(
            _bucket_index(lengths, self.bucket_edges).tolist(), ln, [float(x) for x in ln], list(ln)
        )


class NoisyOraclePredictor:
    """The true bucket with probability ``accuracy``; otherwise a wrong bucket.

    A wrong bucket is a neighbour (one below or one above, each equally likely where both
    exist) with probability ``neighbour_share`` and a uniformly random other bucket
    otherwise, which mimics learned predictors (most of their errors are off by one bucket;
    see DATA-NOTES). The representative length of bucket ``[lo, hi)`` is its upper edge
    ``hi - 1`` (what S3 books: conservative when the bucket is right), and for the open last
    bucket ``[lo, inf)`` it is ``2 * lo``. Deterministic for a given ``seed`` and input order.
    """

    def __init__(
        self,
        accuracy: float,
        seed: int = 0,
        bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES,
        neighbour_share: float = 0.8,
    ) -> None:
        if not 0.0 <= accuracy <= 1.0:
            raise LlmplanError(f"noisy oracle accuracy must be in [0, 1], got {accuracy}; e.g. noisy:0.8")
        if not 0.0 <= neighbour_share <= 1.0:
            raise LlmplanError(f"neighbour_share must be in [0, 1], got {neighbour_share}")
        self.accuracy = accuracy
        self.seed = seed
        self.bucket_edges = tuple(bucket_edges)
        self.neighbour_share = neighbour_share
        self.name = f"noisy-oracle:{accuracy:g}"
        self._rng = np.random.default_rng(seed)
        edges = self.bucket_edges
        reps = [max(1, hi - 1) for hi in edges[1:]] + [2 * max(1, edges[-1])]
        self.representatives: tuple[int, ...] = tuple(reps)

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        specs = _specs(items, "NoisyOraclePredictor")
        nb = len(self.bucket_edges)
        truth = np.fromiter((s.output_tokens for s in specs), np.int64, len(specs))
        true = _bucket_index(truth, self.bucket_edges)
        rng = self._rng
        n = len(true)
        wrong = rng.random(n) >= self.accuracy
        neighbour = rng.random(n) < self.neighbour_share
        up = rng.random(n) < 0.5
        rand_other = rng.integers(0, max(1, nb - 1), n)
        out = true.copy()
        if nb > 1:
            step = np.where(up, 1, -1)
            step = np.where(true == 0, 1, np.where(true == nb - 1, -1, step))
            nbr = true + step
            # A random bucket other than the true one: draw from nb-1 values, skip the true one.
            other = rand_other + (rand_other >= true)
            out = np.where(wrong, np.where(neighbour, nbr, other), true)
        return _bucket_prediction(out, self.representatives)


def _bucket_prediction(buckets: np.ndarray, representatives: Sequence[int]) -> LengthPrediction:
    """A bucket-only prediction: the rank is the bucket (ties inside it), the point estimate and
    the upper bound are the bucket's representative (its upper edge, already conservative)."""
    lengths = np.asarray(representatives)[buckets].tolist()
    return LengthPrediction(buckets.tolist(), lengths, [float(b) for b in buckets.tolist()], list(lengths))


class ConstPredictor:
    """Every request predicted ``tokens`` output tokens (the bucket that length falls in): the
    no-information baseline a length-aware policy must beat."""

    def __init__(self, tokens: int, bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> None:
        if tokens < 1:
            raise LlmplanError(f"const predictor needs at least 1 token, got {tokens}; e.g. const:256")
        self.tokens = int(tokens)
        self.bucket_edges = tuple(bucket_edges)
        self.name = f"const:{self.tokens}"
        self.bucket = int(_bucket_index(np.asarray([self.tokens]), self.bucket_edges)[0])

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        n = len(items)
        # No information: every request ties (policies fall back to arrival order).
        return LengthPrediction([self.bucket] * n, [self.tokens] * n, [0.0] * n, [self.tokens] * n)


def load_confusion(path: str | Path) -> tuple[tuple[int, ...], np.ndarray]:
    """Bucket edges and the row-normalised confusion matrix saved by ``llmplan predict eval
    --report-dir`` (``confusion.json``); one-line errors naming what is wrong."""
    from llmplan.predict.buckets import validate_edges

    p = Path(path)
    fix = "point noisy-cm: at the confusion.json that `llmplan predict eval --report-dir DIR` writes"
    if not p.is_file():
        raise LlmplanError(f"confusion matrix file {str(p)!r} does not exist; {fix}")
    try:
        data = json.loads(p.read_text())
        edges = validate_edges(data["bucket_edges"])
        m = np.asarray(data["matrix"], dtype=np.float64)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise LlmplanError(
            f"{p} is not a confusion matrix (JSON with bucket_edges and matrix: {type(e).__name__}); {fix}"
        ) from None
    nb = len(edges)
    if m.shape != (nb, nb):
        shape = "x".join(map(str, m.shape))
        raise LlmplanError(f"{p}: matrix is {shape}, needs {nb}x{nb} for {nb} buckets; {fix}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise LlmplanError(f"{p}: matrix entries must be finite and non-negative; {fix}")
    sums = m.sum(axis=1)
    bad = [i for i, t in enumerate(sums) if t > 0 and abs(t - 1.0) > 1e-6]
    if bad:
        raise LlmplanError(f"{p}: row {bad[0]} sums to {sums[bad[0]]:.4g}, rows must sum to 1; {fix}")
    return edges, m


class ConfusionNoisyPredictor:
    """Each request's predicted bucket drawn from the confusion-matrix row of its true bucket.

    The matrix is a real predictor's (``llmplan predict eval`` saves it), so the errors keep that
    model's shape: how often, in which direction and how far it misses, per true bucket. Draws are
    independent per request (the ranking of requests inside a bucket is not modelled).
    Representative lengths follow :class:`NoisyOraclePredictor` (upper edge ``hi - 1``, ``2 * lo``
    for the open last bucket). Deterministic for a given ``seed`` and input order. A request whose
    true bucket has no row (the matrix saw no such example) is refused, never guessed.
    """

    def __init__(self, path: str | Path, seed: int = 0) -> None:
        self.path = Path(path)
        self.bucket_edges, self.matrix = load_confusion(self.path)
        self.seed = seed
        self.name = f"noisy-cm:{self.path.name}"
        self._rng = np.random.default_rng(seed)
        edges = self.bucket_edges
        self.representatives = tuple([max(1, hi - 1) for hi in edges[1:]] + [2 * max(1, edges[-1])])

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        specs = _specs(items, "ConfusionNoisyPredictor")
        truth = np.fromiter((s.output_tokens for s in specs), np.int64, len(specs))
        true = _bucket_index(truth, self.bucket_edges)
        empty = [b for b in np.unique(true) if self.matrix[b].sum() == 0]
        if empty:
            from llmplan.predict.buckets import bucket_labels

            lab = bucket_labels(self.bucket_edges)[int(empty[0])]
            k = int(np.sum(true == empty[0]))
            raise LlmplanError(
                f"{self.path} has no examples of true bucket {lab}, but {k} replayed requests fall in it; "
                "evaluate the predictor on data that covers those lengths (llmplan predict eval --data ...)"
            )
        cdf = np.cumsum(self.matrix, axis=1)
        u = self._rng.random(len(true))
        out = np.minimum((u[:, None] >= cdf[true]).sum(axis=1), len(self.bucket_edges) - 1)
        return _bucket_prediction(out, self.representatives)


PREDICTOR_SPECS = (
    "oracle, noisy:ACC, noisy-cm:FILE, const:N, learned:DIR or gbm:DIR (any of them ,book=point to book KV "
    "for the point estimate instead of the upper bound)"
)
BOOKINGS = ("upper", "point")


class PointBooking:
    """A predictor whose KV booking is its point estimate: the wrapped predictor's buckets, point
    estimates and rank scores, with no upper bound (so prediction-booking policies book the point
    estimate and grow a sequence that outgrows it). ``benchmarks/predictor_gain.py`` measures what
    this buys against booking a calibrated p90 (docs/predict.md)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.bucket_edges = inner.bucket_edges  # type: ignore[attr-defined]
        self.name = f"{getattr(inner, 'name', 'predictor')},book=point"

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        p = self.inner.predict(items)  # type: ignore[attr-defined]
        return LengthPrediction(p.buckets, p.lengths, p.rank_scores, None)

    def __getattr__(self, attr: str) -> object:  # the wrapped predictor's other parts (scores, eval)
        return getattr(self.inner, attr)


def _split_booking(spec: str) -> tuple[str, str]:
    """``"learned:DIR,book=point"`` -> ``("learned:DIR", "point")``; no option -> ``"upper"``."""
    head, sep, opt = spec.rpartition(",")
    if not sep or not opt.strip().lower().startswith("book="):
        return spec, "upper"
    book = opt.strip().split("=", 1)[1].strip().lower()
    if book not in BOOKINGS:
        raise LlmplanError(f"bad predictor option {opt.strip()!r}; write book=point or book=upper")
    return head.strip(), book


def parse_predictor(spec: object, seed: int = 0):
    """A predictor from its spec; a trailing ``,book=point`` books KV for the point estimate
    (:class:`PointBooking`), ``,book=upper`` (the default) for the predictor's upper bound."""
    if isinstance(spec, str):
        base, book = _split_booking(spec.strip())
        if book == "point":
            inner = _parse_predictor(base, seed)
            return PointBooking(inner) if inner is not None else None
        spec = base
    return _parse_predictor(spec, seed)


def _path_arg(raw: str, fix: str) -> str:
    """The path after ``KIND:`` in a predictor spec; an empty one is refused with ``fix``."""
    path = raw.split(":", 1)[1]
    if not path:
        raise LlmplanError(f"bad predictor {raw!r}; {fix}")
    return path


def _parse_predictor(spec: object, seed: int = 0):
    """``"oracle"``, ``"noisy:0.8"``, ``"noisy-cm:confusion.json"``, ``"const:256"``,
    ``"learned:DIR"`` (a LoRA classifier saved by ``llmplan predict train --out DIR``, run on the
    prompt text), ``"gbm:DIR"`` (the prompt-length LightGBM saved by ``llmplan predict train --kind gbm``),
    ``None`` (no predictor) or a LengthPredictor object."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        raw = spec.strip()
        s = raw.lower()
        if s == "oracle":
            return OraclePredictor()
        if s.startswith("noisy-cm:"):
            path = _path_arg(raw, "write noisy-cm:<confusion.json>")
            return ConfusionNoisyPredictor(path, seed=seed)
        if s.startswith("noisy:"):
            try:
                acc = float(s.split(":", 1)[1])
            except ValueError:
                msg = f"bad predictor {spec!r}; write noisy:<accuracy>, e.g. noisy:0.8"
                raise LlmplanError(msg) from None
            return NoisyOraclePredictor(acc, seed=seed)
        if s.startswith("const:"):
            try:
                n = int(s.split(":", 1)[1])
            except ValueError:
                raise LlmplanError(f"bad predictor {spec!r}; write const:<tokens>, e.g. const:256") from None
            return ConstPredictor(n)
        if s.startswith("learned:"):
            path = _path_arg(raw, "write learned:<DIR> (from `llmplan predict train --out DIR`)")
            from llmplan.predict.learned import LearnedLengthPredictor

            return LearnedLengthPredictor(path)
        if s.startswith("gbm:"):
            path = _path_arg(raw, "write gbm:<DIR> (from `llmplan predict train --kind gbm --out DIR`)")
            from llmplan.predict.baselines import PromptLengthGBM

            return PromptLengthGBM.load(path)
        raise LlmplanError(f"unknown predictor {spec!r}; use {PREDICTOR_SPECS} or a LengthPredictor object")
    if hasattr(spec, "predict") and hasattr(spec, "bucket_edges"):
        return spec
    raise LlmplanError(f"predictor {spec!r} is not a LengthPredictor (needs .predict and .bucket_edges)")
