"""Token sampling: greedy, temperature, top-k and nucleus (top-p), with per-request seeds.

Greedy rows are one batched max (:func:`greedy`). Random rows each draw from their own
``torch.Generator`` (seeded from the request's seed, else from the engine's seed and the
request's id), so a request's tokens do not depend on what it was batched with.

A row whose sampling fails (a distribution that is not finite, a parameter the checks at the
API let through) fails that request alone: the error is recorded on its sampler, the row gets
no token, and the engine finishes the request with that error while the rest of the step goes
on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from llmplan.runtime.engine.api import GREEDY_TEMPERATURE, SamplingParams


class RequestSampler:
    """Sampling state of one request; ``error`` is set when its sampling failed."""

    __slots__ = ("params", "generator", "error")

    def __init__(self, params: SamplingParams, default_seed: int) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        self.error: str | None = None
        if not self.greedy:
            seed = params.seed if params.seed is not None else default_seed
            self.generator = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF)

    @property
    def greedy(self) -> bool:
        return self.params.temperature < GREEDY_TEMPERATURE or self.params.top_k == 1


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set whose mass reaches ``top_p`` (keeps >= 1 token)."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(descending=True)
    cum = sorted_p.cumsum(-1)
    drop = (cum - sorted_p) >= top_p  # mass before this token already reached top_p
    drop[..., 0] = False  # the most likely token always stays (top_p may round to 0 in fp32)
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, idx, sorted_p)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` largest logits (``top_k`` <= 0 keeps all)."""
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """Index of each row's largest logit, ``[S, V]`` -> ``[S]``: the first one on ties, and a
    NaN's where a row has one, as ``argmax``. ``max(dim).indices`` is the same answer about
    3x faster on CPU (32 x 32000 fp32, 1 thread: 0.50 vs 1.47 ms; 2 threads 0.25 vs 0.75 ms)."""
    return logits.max(dim=-1).indices


def sample_row(logits: torch.Tensor, s: RequestSampler) -> int:
    """One random row ``[V]`` -> a token id; raises ValueError when there is nothing to draw."""
    p = s.params
    if not math.isfinite(p.temperature) or not 0 < p.top_p <= 1:
        raise ValueError(f"invalid sampling parameters (temperature {p.temperature}, top_p {p.top_p})")
    row = top_k_filter(logits.cpu().float() / p.temperature, p.top_k)
    probs = top_p_filter(torch.softmax(row, dim=-1), p.top_p)
    if not bool(torch.isfinite(probs).all()) or not float(probs.sum()) > 0:
        raise ValueError(f"the token distribution is not finite (temperature {p.temperature})")
    return int(torch.multinomial(probs, 1, generator=s.generator).item())


def sample(logits: torch.Tensor, samplers: Sequence[RequestSampler]) -> list[int | None]:
    """``logits`` ``[S, V]`` fp32, one row per sampler -> one token id per row.

    A row whose sampling raises gets None and its sampler's ``error`` says why; the other
    rows are unaffected."""
    if not samplers:
        return []
    out: list[int | None] = list(greedy(logits).tolist())
    for r, s in enumerate(samplers):
        if s.greedy:
            continue
        try:
            out[r] = sample_row(logits[r], s)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not fail the step
            s.error = f"sampling failed: {exc}"
            out[r] = None
    return out
