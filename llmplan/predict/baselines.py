"""Baselines trained in the same run as the learned model: majority class, and a gradient-boosting
model (LightGBM) that sees only the prompt length."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llmplan.errors import LlmplanError
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


GBM_MODEL_FILE = "gbm.txt"  # LightGBM's own text format (no pickle)
GBM_META_FILE = "gbm.json"


class PromptLengthGBM:
    """LightGBM multiclass on log prompt length (tokens counted like the labels).

    ``save(dir)`` writes the booster as LightGBM text plus a JSON meta file; ``load(dir)`` reads them
    back without pickle (``llmplan predict train --kind gbm``, ``bench --predictor gbm:DIR``). Its
    rank score is its predicted length (the training median of the predicted bucket)."""

    def __init__(self, ds: LengthDataset, edges: Sequence[int], seed: int = 0) -> None:
        import lightgbm as lgb

        self.bucket_edges = tuple(edges)
        self.name = "prompt-length GBM"
        y = bucket_of(ds.output_tokens, edges)
        x = np.log1p(np.asarray(ds.prompt_tokens, dtype=np.float64))[:, None]
        self.reps = bucket_medians(ds.output_tokens, edges)
        self.classes = np.unique(y)
        self.booster = None
        self.train_examples = len(ds)
        if len(self.classes) == 1:
            return
        model = lgb.LGBMClassifier(
            n_estimators=100,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=20,
            random_state=seed,
            verbose=-1,
            n_jobs=1,
        )
        model.fit(x, y)
        self.booster = model.booster_

    def save(self, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            self.booster.save_model(str(out / GBM_MODEL_FILE))
        elif (out / GBM_MODEL_FILE).exists():
            (out / GBM_MODEL_FILE).unlink()
        meta = {
            "kind": "prompt-length-gbm",
            "bucket_edges": list(self.bucket_edges),
            "representatives": [int(r) for r in self.reps],
            "classes": [int(c) for c in self.classes],
            "train_examples": self.train_examples,
            **(extra or {}),
        }
        (out / GBM_META_FILE).write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, path: str | Path) -> PromptLengthGBM:
        import lightgbm as lgb

        from llmplan.validate import read_json

        path = Path(path)
        fix = "train one with `llmplan predict train --kind gbm --out DIR`"
        if not (path / GBM_META_FILE).is_file():
            raise LlmplanError(f"{path} is not a saved prompt-length GBM (no {GBM_META_FILE}); {fix}")
        meta = read_json(path / GBM_META_FILE, "GBM predictor meta", fix)
        self = cls.__new__(cls)
        try:
            if meta.get("kind") != "prompt-length-gbm":
                raise ValueError(f"kind {meta.get('kind')!r}")
            self.bucket_edges = tuple(int(e) for e in meta["bucket_edges"])
            self.reps = [int(r) for r in meta["representatives"]]
            self.classes = np.asarray([int(c) for c in meta["classes"]])
            self.train_examples = int(meta.get("train_examples", 0))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise LlmplanError(
                f"{path / GBM_META_FILE} is not a GBM predictor's meta ({exc}); {fix}"
            ) from None
        self.name = f"gbm:{path.name}"
        self.meta = meta
        self.booster = None
        if len(self.classes) > 1:
            if not (path / GBM_MODEL_FILE).is_file():
                raise LlmplanError(f"{path} has no {GBM_MODEL_FILE}; {fix}")
            try:
                self.booster = lgb.Booster(model_file=str(path / GBM_MODEL_FILE))
            except lgb.basic.LightGBMError as exc:
                msg = str(exc).splitlines()[0] if str(exc) else "unreadable"
                raise LlmplanError(
                    f"{path / GBM_MODEL_FILE} is not a LightGBM model ({msg}); {fix}"
                ) from None
        return self

    def predict(self, items: Sequence[PromptLike]) -> LengthPrediction:
        if not items:
            return LengthPrediction([], [], rank_scores=[])
        if self.booster is None:
            b = [int(self.classes[0])] * len(items)
        else:
            x = np.log1p(_prompt_tokens(items))[:, None]
            proba = np.asarray(self.booster.predict(x)).reshape(len(items), -1)
            if proba.shape[1] == 1:  # two classes: LightGBM's binary objective gives P(second class)
                proba = np.hstack([1.0 - proba, proba])
            b = [int(self.classes[i]) for i in proba.argmax(axis=1)]
        lengths = [self.reps[i] for i in b]
        return LengthPrediction(b, lengths, rank_scores=[float(v) for v in lengths])
