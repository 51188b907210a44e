"""K-Prototypes clustering of task features, with K chosen by the elbow method.

Distance (Huang 1998, as implemented by ``kmodes``): squared Euclidean distance on the numeric
features plus ``gamma`` x the number of mismatched categorical features. The numeric features
(log input tokens, log output tokens) are z-scored first. ``gamma`` defaults to 0.5, which is what
``kmodes`` itself picks (half the mean numeric standard deviation) for unit-variance columns: one
mismatched category (task or language) costs 0.5, the same as a length difference of ~0.7 sigma.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmplan.profile.features import CATEGORICAL, numeric_matrix

DEFAULT_GAMMA = 0.5


@dataclass(slots=True)
class Scaler:
    mean: np.ndarray
    std: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std


def _matrix(df: pd.DataFrame, scaler: Scaler) -> np.ndarray:
    num = scaler(numeric_matrix(df))
    cat = df[list(CATEGORICAL)].astype(str).to_numpy()
    return np.hstack([num.astype(object), cat])


@dataclass(slots=True)
class Prototypes:
    """A fitted K-Prototypes model reduced to what assignment needs: the prototypes and gamma.

    ``predict`` is kmodes' own rule (squared Euclidean distance on the numeric part plus ``gamma``
    x mismatched categories, the first cluster on ties), so a profiler saved as JSON and loaded
    back assigns exactly as the kmodes object it came from, without pickling that object.
    """

    numeric: np.ndarray  # (k, n_numeric), in scaled units
    categorical: list[list[str]]  # k rows of category labels
    gamma: float

    @classmethod
    def from_kmodes(cls, model) -> Prototypes:
        cents = np.asarray(model.cluster_centroids_, dtype=object)
        n_cat = len(CATEGORICAL)
        n_num = cents.shape[1] - n_cat
        return cls(
            np.asarray(cents[:, :n_num], dtype=float),
            [[str(v) for v in row[n_num:]] for row in cents],
            float(model.gamma),
        )

    @property
    def cluster_centroids_(self) -> list[list]:
        return [[*self.numeric[c].tolist(), *self.categorical[c]] for c in range(len(self.categorical))]

    def predict(self, x: np.ndarray, categorical: list[int]) -> np.ndarray:
        num_cols = [i for i in range(x.shape[1]) if i not in set(categorical)]
        num = np.asarray(x[:, num_cols], dtype=float)
        cat = np.asarray(x[:, categorical]).astype(str)
        d_num = ((num[:, None, :] - self.numeric[None, :, :]) ** 2).sum(axis=2)
        protos = np.asarray(self.categorical, dtype=str)
        d_cat = (cat[:, None, :] != protos[None, :, :]).sum(axis=2)
        return np.argmin(d_num + self.gamma * d_cat, axis=1)

    def to_dict(self) -> dict:
        return {"numeric": self.numeric.tolist(), "categorical": self.categorical, "gamma": self.gamma}

    @classmethod
    def from_dict(cls, d: dict) -> Prototypes:
        numeric = np.asarray(d["numeric"], dtype=float)
        categorical = [[str(v) for v in row] for row in d["categorical"]]
        if numeric.ndim != 2 or len(categorical) != numeric.shape[0] or not np.isfinite(numeric).all():
            raise ValueError("prototypes: numeric and categorical rows disagree or are not finite")
        if any(len(row) != len(CATEGORICAL) for row in categorical):
            raise ValueError(f"prototypes: each categorical row needs {len(CATEGORICAL)} labels")
        return cls(numeric, categorical, float(d["gamma"]))


def fit_scaler(df: pd.DataFrame) -> Scaler:
    x = numeric_matrix(df)
    return Scaler(x.mean(axis=0), np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0))


def kprototypes(df: pd.DataFrame, k: int, scaler: Scaler, gamma: float = DEFAULT_GAMMA, seed: int = 0):
    from kmodes.kprototypes import KPrototypes

    n_num = numeric_matrix(df).shape[1]
    model = KPrototypes(
        n_clusters=k, init="Cao", gamma=gamma, n_init=4, max_iter=50, random_state=seed, n_jobs=1
    )
    model.fit(_matrix(df, scaler), categorical=list(range(n_num, n_num + len(CATEGORICAL))))
    return model


def assign(model, df: pd.DataFrame, scaler: Scaler) -> np.ndarray:
    n_num = numeric_matrix(df).shape[1]
    return model.predict(_matrix(df, scaler), categorical=list(range(n_num, n_num + len(CATEGORICAL))))


def elbow(df: pd.DataFrame, ks: Sequence[int], scaler: Scaler, gamma: float = DEFAULT_GAMMA, seed: int = 0):
    """Cost (sum of mixed distances to the prototypes) per K."""
    return [float(kprototypes(df, k, scaler, gamma, seed).cost_) for k in ks]


def pick_elbow(ks: Sequence[int], costs: Sequence[float]) -> int:
    """The K farthest below the straight line from the first to the last (K, cost) point
    (the "kneedle" rule), on costs normalised to [0, 1]."""
    k = np.asarray(ks, dtype=float)
    c = np.asarray(costs, dtype=float)
    if len(k) < 3:
        return int(k[0])
    kn = (k - k[0]) / (k[-1] - k[0])
    cn = (c - c.min()) / max(c.max() - c.min(), 1e-12)
    line = cn[0] + (cn[-1] - cn[0]) * kn
    return int(k[int(np.argmax(line - cn))])


def plot_elbow(ks: Sequence[int], costs: Sequence[float], chosen: int, path: str | Path) -> Path:
    from llmplan.plotting import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(5.5, 3.5))
    ax.plot(ks, costs, "o-")
    ax.axvline(chosen, color="tab:red", ls="--", label=f"elbow K={chosen}")
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel("K-Prototypes cost")
    ax.set_title("elbow method")
    ax.legend()
    return save_figure(fig, path, dpi=90)
