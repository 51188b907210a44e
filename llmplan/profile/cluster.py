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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(ks, costs, "o-")
    ax.axvline(chosen, color="tab:red", ls="--", label=f"elbow K={chosen}")
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel("K-Prototypes cost")
    ax.set_title("elbow method")
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
