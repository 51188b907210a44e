"""The one predictor interface used by batch policies, the simulator and the engine.

``predict(items)`` takes prompts (``str``) or :class:`RequestSpec` objects and returns,
per item, a length bucket and a representative length in tokens, and optionally a rank score
(only its order matters: what SJF / S3 / SLO-ODBS sort by) and a calibrated upper bound (what KV
booking and S3 admission reserve). Learned predictors read the prompt text; oracle predictors read
``RequestSpec.output_tokens``. Predictors that leave ``rank_scores`` / ``upper`` as ``None`` keep
working: :func:`rank_scores_of` falls back to ``lengths`` and :func:`upper_of` to ``lengths``.
(Implementations: issue 5. The oracle and noisy oracle live beside this file.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llmplan.workload.types import RequestSpec

if TYPE_CHECKING:
    from llmplan.runtime.core.types import SeqState

# UELLM's buckets: [0,8), [8,16), [16,32), ..., [1024,2048), [2048, inf)
DEFAULT_BUCKET_EDGES: tuple[int, ...] = (0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

PromptLike = str | RequestSpec


@dataclass(slots=True)
class LengthPrediction:
    buckets: list[int]  # bucket index per item, 0-based into the edges
    lengths: list[int]  # point estimate of output tokens per item (e.g. the p50 / bucket median)
    # Higher = longer output; only the ORDER across items matters. None: order by ``lengths``.
    rank_scores: list[float] | None = None
    # Calibrated upper bound of output tokens per item (e.g. the p90). None: ``lengths``.
    upper: list[int] | None = None


def rank_scores_of(p: LengthPrediction) -> list[float]:
    """The rank score per item (``lengths`` as floats where the predictor gives none)."""
    if p.rank_scores is None:
        return [float(x) for x in p.lengths]
    if len(p.rank_scores) != len(p.lengths):
        raise ValueError(f"rank_scores has {len(p.rank_scores)} items, lengths {len(p.lengths)}")
    return [float(x) for x in p.rank_scores]


def upper_of(p: LengthPrediction) -> list[int]:
    """The upper bound of output tokens per item (``lengths`` where the predictor gives none),
    never below the point estimate and at least 1."""
    if p.upper is None:
        return [max(1, int(x)) for x in p.lengths]
    if len(p.upper) != len(p.lengths):
        raise ValueError(f"upper has {len(p.upper)} items, lengths {len(p.lengths)}")
    return [max(1, int(u), int(x)) for u, x in zip(p.upper, p.lengths, strict=True)]


class LengthPredictor(Protocol):
    name: str
    bucket_edges: tuple[int, ...]

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction: ...


def apply_prediction(seqs: Sequence[SeqState], p: LengthPrediction) -> None:
    """Set each sequence's predicted bucket, point estimate (>= 1), rank score and upper bound
    (>= the point estimate) from one prediction over them, in order: the one place the simulator
    and the engine turn a :class:`LengthPrediction` into scheduler state."""
    n = len(seqs)
    if len(p.buckets) != n or len(p.lengths) != n:
        raise ValueError(f"prediction has {len(p.lengths)} items for {n} requests")
    ranks = rank_scores_of(p) if p.rank_scores is not None else None
    ups = upper_of(p) if p.upper is not None else None
    for i, s in enumerate(seqs):
        s.predicted_bucket = int(p.buckets[i])
        s.predicted_output_tokens = ln = max(1, int(p.lengths[i]))
        s.predicted_rank = ranks[i] if ranks is not None else None
        s.predicted_upper = max(ln, ups[i]) if ups is not None else None
