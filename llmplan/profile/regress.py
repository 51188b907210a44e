"""Per-cluster regressors: RandomForest, GradientBoosting and LightGBM compete by cross-validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CANDIDATES = ("random_forest", "gradient_boosting", "lightgbm")
MIN_CLUSTER_FOR_OWN_MODEL = 12  # smaller clusters borrow the global model: CV on fewer rows is noise


def make(name: str, seed: int, n_estimators: int = 100) -> Any:
    if name == "random_forest":
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=n_estimators, min_samples_leaf=2, random_state=seed, n_jobs=1
        )
    if name == "gradient_boosting":
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(
            n_estimators=n_estimators, max_depth=3, learning_rate=0.05, random_state=seed
        )
    if name == "lightgbm":
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            n_estimators=n_estimators,
            learning_rate=0.05,
            num_leaves=15,
            min_child_samples=5,
            random_state=seed,
            verbose=-1,
            n_jobs=1,
        )
    raise ValueError(name)


def _relative_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean absolute percentage error; the selection criterion matches the report's <10% metric."""
    return float(np.mean(np.abs(p - y) / np.maximum(np.abs(y), 1e-9)))


@dataclass(slots=True)
class Selected:
    name: str
    cv_mape: dict[str, float]
    model: Any
    oof: np.ndarray | None = None  # out-of-fold predictions of the chosen model (global model only)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)


def select(
    x: np.ndarray,
    y: np.ndarray,
    seed: int = 0,
    folds: int = 3,
    n_estimators: int = 100,
    fallback: Selected | None = None,
    fallback_oof: np.ndarray | None = None,
) -> Selected:
    """Pick the candidate with the lowest k-fold CV MAPE, then refit it on all rows.

    ``fallback`` (the global model) competes too, scored on its out-of-fold predictions for these
    rows: a cluster keeps its own model only when that beats the global one in cross-validation.
    """
    from sklearn.model_selection import KFold, cross_val_predict

    folds = max(2, min(folds, len(y) // 4))
    cv = KFold(n_splits=folds, shuffle=True, random_state=seed)
    scores: dict[str, float] = {}
    oof: dict[str, np.ndarray] = {}
    for name in CANDIDATES:
        oof[name] = cross_val_predict(make(name, seed, n_estimators), x, y, cv=cv)
        scores[name] = _relative_score(y, oof[name])
    if fallback is not None and fallback_oof is not None:
        scores["global"] = _relative_score(y, fallback_oof)
    best = min(scores, key=scores.__getitem__)
    if best == "global":
        assert fallback is not None
        return Selected("global", scores, fallback.model)
    return Selected(best, scores, make(best, seed, n_estimators).fit(x, y), oof[best])


def within(y: np.ndarray, p: np.ndarray, tol: float = 0.10) -> float:
    """Share of samples whose relative error is below ``tol``."""
    return float(np.mean(np.abs(p - y) < tol * np.maximum(np.abs(y), 1e-9)))
