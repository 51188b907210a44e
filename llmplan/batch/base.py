"""Shared helpers for batch policies; the protocol itself lives in the serving core
(:mod:`llmplan.runtime.core.policy`) and is re-exported here."""

from __future__ import annotations

from llmplan.runtime.core.policy import AdmissionView, BatchPolicy, Reserve
from llmplan.runtime.core.types import SeqState

__all__ = ["AdmissionView", "BatchPolicy", "Reserve", "deadline", "predicted_len"]


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
