"""Shared helpers for batch policies; the protocol itself lives in the serving core
(:mod:`llmplan.runtime.core.policy`) and is re-exported here."""

from __future__ import annotations

from llmplan.runtime.core.policy import AdmissionView, BatchPolicy, Reserve
from llmplan.runtime.core.types import SeqState

__all__ = ["AdmissionView", "BatchPolicy", "Reserve", "booked_len", "deadline", "predicted_len", "rank_key"]


def predicted_len(seq: SeqState) -> int:
    """The policy's view of a sequence's output length (a prediction, never the truth).

    Without a prediction the sequence sorts as unknown-long, so length-aware policies
    degrade to arrival order rather than guessing short.
    """
    p = seq.predicted_output_tokens
    return p if p is not None else 1 << 30


def deadline(seq: SeqState) -> float:
    """Absolute end-to-end deadline; requests without an E2E SLO sort last."""
    e2e = seq.spec.slo.e2e_s
    return seq.spec.arrival_s + e2e if e2e is not None else float("inf")


def rank_key(seq: SeqState) -> float:
    """What length-aware policies order by: the predictor's rank score (higher = longer), else
    its point estimate; a sequence without a prediction sorts as unknown-long (last)."""
    r = seq.predicted_rank
    if r is not None:
        return r
    p = seq.predicted_output_tokens
    return float(p) if p is not None else float("inf")


def booked_len(seq: SeqState) -> int:
    """Output tokens to book KV for: the calibrated upper bound, else the point estimate, else 1
    (no prediction: book the prompt only and grow on demand)."""
    b = seq.booked_output_tokens
    return max(1, b) if b is not None else 1
