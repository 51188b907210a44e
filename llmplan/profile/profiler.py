"""The K-Prototypes resource profiler (UELLM's resource profiler and the thesis's first work).

``fit``: cluster task features with K-Prototypes (K by elbow), then per cluster and per metric pick
the best of RandomForest / GradientBoosting / LightGBM by CV; a global model of the same kind is
trained on all rows for comparison. ``predict`` assigns a cluster and uses that cluster's models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from llmplan.errors import LlmplanError
from llmplan.fileio import write_text_atomic
from llmplan.profile import cluster as kp
from llmplan.profile.features import CATEGORICAL, METRICS, NUMERIC, design_matrix
from llmplan.profile.regress import MIN_CLUSTER_FOR_OWN_MODEL, Selected, select, within

REQUIRED = (*CATEGORICAL, *NUMERIC, *METRICS)


def check_frame(df: pd.DataFrame, what: str = "profile data") -> None:
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise LlmplanError(f"{what} lacks columns {missing}; collect it with `llmplan profile collect`")
    for col in (*NUMERIC, *METRICS):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
        if len(bad):
            raise LlmplanError(
                f"{what}: row {int(bad[0]) + 1} has {col} = {df[col].iloc[int(bad[0])]!r}; values must be "
                "finite numbers >= 0 (fix or delete the row, or re-collect)"
            )
    if len(df) < 20:
        raise LlmplanError(
            f"{what} has {len(df)} rows; the profiler needs at least 20 (collect more, or --repeat)"
        )


@dataclass
class ResourceProfiler:
    k: int
    gamma: float
    scaler: kp.Scaler
    clusterer: Any
    models: dict[int, dict[str, Selected]]  # cluster -> metric -> model (global fallback for small ones)
    global_models: dict[str, Selected]
    description: list[dict[str, Any]] = field(default_factory=list)
    elbow: dict[str, list] = field(default_factory=dict)
    # The serving process's footprint with no request running (weights, runtime): the lowest mean
    # memory seen in training. Per-request memory is measured above it (the planner's KV reserve).
    memory_floor_mb: float | None = None

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        k: int | None = None,
        gamma: float = kp.DEFAULT_GAMMA,
        seed: int = 0,
        k_range: range = range(2, 9),
        n_estimators: int = 100,
    ) -> ResourceProfiler:
        check_frame(df, "training data")
        df = df.reset_index(drop=True)
        scaler = kp.fit_scaler(df)
        elbow: dict[str, list] = {}
        if k is None:
            ks = [c for c in k_range if c < len(df) // 5] or [2]
            costs = kp.elbow(df, ks, scaler, gamma, seed)
            k = kp.pick_elbow(ks, costs)
            elbow = {"k": ks, "cost": costs, "chosen": k}
        fitted = kp.kprototypes(df, k, scaler, gamma, seed)
        labels = np.asarray(fitted.labels_)
        # Keep only the prototypes (what assignment needs): the profiler saves as plain JSON.
        clusterer = kp.Prototypes.from_kmodes(fitted)
        x = design_matrix(df)
        global_models = {
            m: select(x, df[m].to_numpy(float), seed, n_estimators=n_estimators) for m in METRICS
        }
        models: dict[int, dict[str, Selected]] = {}
        for c in range(k):
            idx = np.flatnonzero(labels == c)
            if len(idx) < MIN_CLUSTER_FOR_OWN_MODEL:
                models[c] = {m: Selected("global", {}, g.model) for m, g in global_models.items()}
                continue
            models[c] = {
                m: select(
                    x[idx],
                    df[m].to_numpy(float)[idx],
                    seed,
                    n_estimators=n_estimators,
                    fallback=global_models[m],
                    fallback_oof=global_models[m].oof[idx],
                )
                for m in METRICS
            }
        prof = cls(
            k, gamma, scaler, clusterer, models, global_models, elbow=elbow,
            memory_floor_mb=float(df["mean_mem_mb"].min()),
        )  # fmt: skip
        prof.description = prof._describe(df, labels)
        return prof

    def _describe(self, df: pd.DataFrame, labels: np.ndarray) -> list[dict[str, Any]]:
        out = []
        centroids = self.clusterer.cluster_centroids_
        n_num = len(NUMERIC)
        for c in range(self.k):
            sel = df[labels == c]
            num = np.asarray(centroids[c][:n_num], dtype=float) * self.scaler.std + self.scaler.mean
            row: dict[str, Any] = {
                "cluster": c,
                "size": int(len(sel)),
                "centroid": {
                    **{n: round(float(np.expm1(v)), 1) for n, v in zip(NUMERIC, num, strict=True)},
                    **{n: str(v) for n, v in zip(CATEGORICAL, centroids[c][n_num:], strict=True)},
                },
                "model": {m: self.models[c][m].name for m in METRICS},
            }
            for m in METRICS:
                row[m] = {
                    "mean": float(sel[m].mean()) if len(sel) else None,
                    "std": float(sel[m].std(ddof=0)) if len(sel) else None,
                }
            out.append(row)
        # Variance reduction: how much of each metric's spread the clustering alone explains.
        for m in METRICS:
            total = float(df[m].var(ddof=0))
            within_var = float(
                sum(
                    df[m][labels == c].var(ddof=0) * (labels == c).sum()
                    for c in range(self.k)
                    if (labels == c).sum()
                )
                / len(df)
            )
            for row in out:
                row.setdefault("variance_reduction", {})[m] = 1 - within_var / total if total > 0 else 0.0
        return out

    def clusters_of(self, df: pd.DataFrame) -> np.ndarray:
        return np.asarray(kp.assign(self.clusterer, df, self.scaler))

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """Per-row predictions of the five metrics, plus the assigned cluster."""
        missing = [c for c in (*CATEGORICAL, *NUMERIC) if c not in df.columns]
        if missing:
            raise LlmplanError(
                f"features lack columns {missing}; build them with profile.features.feature_frame"
            )
        df = df.reset_index(drop=True)
        labels = self.clusters_of(df)
        x = design_matrix(df)
        out = pd.DataFrame({"cluster": labels})
        for m in METRICS:
            pred = np.zeros(len(df))
            for c in np.unique(labels):
                idx = np.flatnonzero(labels == c)
                pred[idx] = self.models[int(c)][m].predict(x[idx])
            out[m] = pred
        return out

    def predict_global(self, df: pd.DataFrame) -> pd.DataFrame:
        x = design_matrix(df.reset_index(drop=True))
        return pd.DataFrame({m: self.global_models[m].predict(x) for m in METRICS})

    def save(self, path: str | Path) -> Path:
        """Write the profiler as data, never as code: ``profiler.json`` (prototypes, scaler,
        description, which model each cluster and metric uses) plus one file per fitted model in
        ``models/``: scikit-learn models in skops format, LightGBM boosters in LightGBM's text
        format. ``load`` reads these without unpickling anything."""
        from llmplan.profile import persist

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / persist.MODEL_DIR).mkdir(exist_ok=True)
        files: dict[int, str] = {}  # id(model) -> file name: a global model shared by clusters is saved once

        def entry(sel: Selected, key: str) -> dict[str, Any]:
            if id(sel.model) not in files:
                files[id(sel.model)] = persist.save_model(sel.model, path / persist.MODEL_DIR, key)
            return {"name": sel.name, "cv_mape": sel.cv_mape, "file": files[id(sel.model)]}

        doc = {
            "format": persist.FORMAT,
            "version": persist.VERSION,
            "k": self.k,
            "gamma": self.gamma,
            "scaler": {"mean": self.scaler.mean.tolist(), "std": self.scaler.std.tolist()},
            "prototypes": self.clusterer.to_dict(),
            "memory_floor_mb": self.memory_floor_mb,
            "global_models": {m: entry(sel, f"global-{m}") for m, sel in self.global_models.items()},
            "models": {
                str(c): {m: entry(sel, f"c{c}-{m}") for m, sel in per.items()}
                for c, per in self.models.items()
            },
            "description": self.description,
            "elbow": self.elbow,
        }
        write_text_atomic(path / persist.DOC, json.dumps(doc, indent=1, default=_json_default))
        (path / "clusters.json").write_text(
            json.dumps(
                {"k": self.k, "gamma": self.gamma, "elbow": self.elbow, "clusters": self.description},
                indent=2,
                default=_json_default,
            )
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResourceProfiler:
        from llmplan.profile import persist

        return persist.load_profiler(cls, Path(path))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def compare(prof: ResourceProfiler, test: pd.DataFrame, tol: float = 0.10) -> list[dict[str, Any]]:
    """Share of test rows with relative error < ``tol``, per metric: clustered profiler vs global model."""
    test = test.reset_index(drop=True)
    ours, glob = prof.predict(test), prof.predict_global(test)
    rows = []
    for m in METRICS:
        y = test[m].to_numpy(float)
        rows.append(
            {
                "metric": m,
                "profiler": within(y, ours[m].to_numpy(), tol),
                "global": within(y, glob[m].to_numpy(), tol),
                "profiler_mape": float(np.mean(np.abs(ours[m] - y) / np.maximum(np.abs(y), 1e-9))),
                "global_mape": float(np.mean(np.abs(glob[m] - y) / np.maximum(np.abs(y), 1e-9))),
            }
        )
    return rows


def split_frame(
    df: pd.DataFrame, test_frac: float = 0.25, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    mask = rng.random(len(df)) < test_frac
    return df[~mask].reset_index(drop=True), df[mask].reset_index(drop=True)


def predict_memory_mb(
    profile: str | Path | ResourceProfiler,
    prompts: list[str],
    *,
    input_tokens: list[int] | None = None,
    output_tokens_est: list[int] | None = None,
    tasks: list[str | None] | None = None,
    kind: str = "max",
) -> list[float]:
    """Predicted peak (``kind="max"``) or mean accelerator memory in MiB per prompt.

    The planner's hook for its KV reserve: ``predict_memory_mb(profile_dir, prompts)``. Token counts
    default to the counting tokenizer (prompt) and 256 (output) when not given.
    """
    from llmplan.predict.tokenize import count_tokens
    from llmplan.profile.features import feature_frame

    prof = profile if isinstance(profile, ResourceProfiler) else ResourceProfiler.load(profile)
    n_in = input_tokens if input_tokens is not None else count_tokens(prompts)
    n_out = output_tokens_est if output_tokens_est is not None else [256] * len(prompts)
    pred = prof.predict(feature_frame(prompts, n_in, n_out, tasks))
    return pred["max_mem_mb" if kind == "max" else "mean_mem_mb"].astype(float).tolist()
