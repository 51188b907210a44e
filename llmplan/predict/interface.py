"""The one predictor interface used by batch policies, the simulator and the engine.

``predict(items)`` takes prompts (``str``) or :class:`RequestSpec` objects and returns,
per item, a length bucket and a representative length in tokens. Learned predictors read
the prompt text; oracle predictors read ``RequestSpec.output_tokens``.
(Implementations: issue 5. The oracle and noisy oracle live beside this file.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from llmplan.workload.types import RequestSpec

# UELLM's buckets: [0,8), [8,16), [16,32), ..., [1024,2048), [2048, inf)
DEFAULT_BUCKET_EDGES: tuple[int, ...] = (0, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

PromptLike = str | RequestSpec


@dataclass(slots=True)
class LengthPrediction:
    buckets: list[int]  # bucket index per item, 0-based into the edges
    lengths: list[int]  # representative output length in tokens per item


class LengthPredictor(Protocol):
    name: str
    bucket_edges: tuple[int, ...]

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction: ...
