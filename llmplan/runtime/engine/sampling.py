"""Token sampling: greedy, temperature and nucleus (top-p), with per-request seeds.

Greedy rows are one batched argmax. Random rows each draw from their own
``torch.Generator`` (seeded from the request's seed, else from the engine's seed and the
request's id), so a request's tokens do not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmplan.runtime.engine.api import SamplingParams


class RequestSampler:
    """Sampling state of one request."""

    __slots__ = ("params", "generator")

    def __init__(self, params: SamplingParams, default_seed: int) -> None:
        self.params = params
        self.generator: torch.Generator | None = None
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else default_seed
            self.generator = torch.Generator().manual_seed(int(seed) & 0xFFFF_FFFF_FFFF)

    @property
    def greedy(self) -> bool:
        return self.params.temperature <= 0


def top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail outside the smallest set whose mass reaches ``top_p`` (keeps >= 1 token)."""
    if top_p >= 1.0:
        return probs
    sorted_p, idx = probs.sort(descending=True)
    cum = sorted_p.cumsum(-1)
    drop = (cum - sorted_p) >= top_p  # mass before this token already reached top_p
    sorted_p = sorted_p.masked_fill(drop, 0.0)
    return torch.zeros_like(probs).scatter_(-1, idx, sorted_p)


def sample(logits: torch.Tensor, samplers: Sequence[RequestSampler]) -> list[int]:
    """``logits`` ``[S, V]`` fp32, one row per sampler -> one token id per row."""
    if not samplers:
        return []
    out = logits.argmax(dim=-1).tolist()
    for r, s in enumerate(samplers):
        if s.greedy:
            continue
        p = s.params
        probs = torch.softmax(logits[r].cpu() / p.temperature, dim=-1)
        probs = top_p_filter(probs, p.top_p)
        out[r] = int(torch.multinomial(probs, 1, generator=s.generator).item())
    return out
