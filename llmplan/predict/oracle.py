"""Oracle length predictors for experiments: the truth, and the truth with a set accuracy.

Both read ``RequestSpec.output_tokens``; they exist to measure how much a length-aware policy
gains from a perfect predictor and how it degrades as accuracy drops, beside the learned
predictor behind the same :class:`~llmplan.predict.interface.LengthPredictor` interface.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        return LengthPrediction(_bucket_index(lengths, self.bucket_edges).tolist(), lengths.tolist())


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
        lengths = np.asarray(self.representatives)[out]
        return LengthPrediction(out.tolist(), lengths.tolist())


def parse_predictor(spec: object, seed: int = 0):
    """``"oracle"``, ``"noisy:0.8"``, ``None`` (no predictor) or a LengthPredictor object."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s == "oracle":
            return OraclePredictor()
        if s.startswith("noisy:"):
            try:
                acc = float(s.split(":", 1)[1])
            except ValueError:
                msg = f"bad predictor {spec!r}; write noisy:<accuracy>, e.g. noisy:0.8"
                raise LlmplanError(msg) from None
            return NoisyOraclePredictor(acc, seed=seed)
        raise LlmplanError(
            f"unknown predictor {spec!r}; use oracle, noisy:<accuracy> or a LengthPredictor object"
        )
    if hasattr(spec, "predict") and hasattr(spec, "bucket_edges"):
        return spec
    raise LlmplanError(f"predictor {spec!r} is not a LengthPredictor (needs .predict and .bucket_edges)")
