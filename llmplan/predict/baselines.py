"""Baselines trained in the same run as the learned model: majority class, and a gradient-boosting
model (LightGBM) that sees only the prompt length."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmplan.predict.buckets import bucket_medians, bucket_of
from llmplan.predict.data import LengthDataset
from llmplan.predict.interface import LengthPrediction, PromptLike
from llmplan.predict.tokenize import count_tokens
from llmplan.workload.types import RequestSpec


def _prompt_tokens(items: Sequence[PromptLike]) -> np.ndarray:
    counts = np.zeros(len(items), dtype=np.float64)
    texts = [(i, x) for i, x in enumerate(items) if not isinstance(x, RequestSpec)]
    for i, x in enumerate(items):
        if isinstance(x, RequestSpec):
            counts[i] = x.prompt_tokens
    if texts:
        counts[[i for i, _ in texts]] = count_tokens([t for _, t in texts])
    return counts


class MajorityPredictor:
    def __init__(self, ds: LengthDataset, edges: Sequence[int]) -> None:
        self.bucket_edges = tuple(edges)
        self.name = "majority"
        b = bucket_of(ds.output_tokens, edges)
        self.bucket = int(np.bincount(b, minlength=len(edges)).argmax())
        self.length = bucket_medians(ds.output_tokens, edges)[self.bucket]

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        return LengthPrediction([self.bucket] * len(items), [self.length] * len(items))


class PromptLengthGBM:
    """LightGBM multiclass on log prompt length (tokens counted like the labels)."""

    def __init__(self, ds: LengthDataset, edges: Sequence[int], seed: int = 0) -> None:
        import lightgbm as lgb

        self.bucket_edges = tuple(edges)
        self.name = "prompt-length GBM"
        y = bucket_of(ds.output_tokens, edges)
        x = np.log1p(np.asarray(ds.prompt_tokens, dtype=np.float64))[:, None]
        self.reps = bucket_medians(ds.output_tokens, edges)
        self.classes = np.unique(y)
        if len(self.classes) == 1:
            self.model = None
            return
        self.model = lgb.LGBMClassifier(
            n_estimators=100,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=20,
            random_state=seed,
            verbose=-1,
            n_jobs=1,
        )
        self.model.fit(x, y)

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        if not items:
            return LengthPrediction([], [])
        if self.model is None:
            b = [int(self.classes[0])] * len(items)
        else:
            x = np.log1p(_prompt_tokens(items))[:, None]
            b = [int(v) for v in self.model.predict(x)]
        return LengthPrediction(b, [self.reps[i] for i in b])
