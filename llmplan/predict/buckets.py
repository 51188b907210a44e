"""Length buckets: validation, assignment and representative lengths.

Edges ``(e0, e1, ..., en)`` define buckets ``[e_i, e_{i+1})`` plus a last open bucket ``[en, inf)``,
so there are ``len(edges)`` buckets. UELLM's edges are :data:`DEFAULT_BUCKET_EDGES`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES


def validate_edges(edges: Sequence[int]) -> tuple[int, ...]:
    """Return edges as a tuple, or raise a one-line error naming what is wrong."""
    out = tuple(int(e) for e in edges)
    if len(out) < 2:
        raise LlmplanError(f"bucket edges {list(out)} need at least two values, e.g. 0,8,16,32")
    if out[0] != 0:
        raise LlmplanError(f"bucket edges must start at 0 (got {out[0]}); e.g. 0,8,16,32")
    if any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise LlmplanError(f"bucket edges {list(out)} must be strictly increasing; e.g. 0,8,16,32")
    return out


def parse_edges(text: str | None) -> tuple[int, ...]:
    """Parse ``"0,8,16"``; ``None``/empty gives the UELLM default."""
    if not text:
        return DEFAULT_BUCKET_EDGES
    try:
        return validate_edges([int(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise LlmplanError(
            f"bucket edges {text!r} are not comma-separated integers; e.g. 0,8,16,32"
        ) from None


def bucket_of(lengths: Iterable[int] | np.ndarray, edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> np.ndarray:
    """Bucket index per length: the i with ``edges[i] <= length < edges[i+1]`` (last bucket open)."""
    arr = np.asarray(list(lengths) if not isinstance(lengths, np.ndarray) else lengths, dtype=np.int64)
    return np.searchsorted(np.asarray(edges), arr, side="right") - 1


def bucket_labels(edges: Sequence[int]) -> list[str]:
    labels = [f"[{a},{b})" for a, b in zip(edges, edges[1:], strict=False)]
    labels.append(f"[{edges[-1]},inf)")
    return labels


def default_representatives(edges: Sequence[int]) -> list[int]:
    """Representative length when no training data says otherwise: the bucket midpoint
    (the open last bucket uses 1.5x its lower edge)."""
    reps = [(a + b) // 2 for a, b in zip(edges, edges[1:], strict=False)]
    reps.append(int(edges[-1] * 1.5))
    return reps


def bucket_medians(lengths: Sequence[int], edges: Sequence[int]) -> list[int]:
    """Per-bucket median of the training lengths; empty buckets fall back to the midpoint.

    The median (not the upper edge) is the representative length: it minimises absolute error in
    tokens. Schedulers that must not under-reserve should use the bucket's upper edge instead.
    """
    arr = np.asarray(lengths, dtype=np.int64)
    b = bucket_of(arr, edges)
    reps = default_representatives(edges)
    for i in range(len(edges)):
        sel = arr[b == i]
        if sel.size:
            reps[i] = int(np.median(sel))
    return reps
