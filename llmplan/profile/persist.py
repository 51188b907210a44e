"""Save and load a fitted resource profiler as data: no pickle, so loading a profile runs no code.

A profiler directory holds:

- ``profiler.json``: format/version, K, gamma, the scaler, the K-Prototypes prototypes, the memory
  floor, the description, and for every cluster and metric the chosen model's name, CV scores and
  file;
- ``models/*.skops``: scikit-learn models (RandomForest, GradientBoosting) in skops format, loaded
  with an explicit allow-list of types (skops refuses any other type instead of importing it);
- ``models/*.lgbm.txt``: LightGBM boosters in LightGBM's own text model format.

A directory with only the ``profiler.pkl`` of an older llmplan is refused with the command that
re-fits it: unpickling a file can run arbitrary code, so it is never attempted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.validate import integer, mapping, number, read_json

FORMAT = "llmplan.profiler"
VERSION = 2  # v1 was the pickle
DOC = "profiler.json"
MODEL_DIR = "models"
LEGACY_PICKLE = "profiler.pkl"

# Types a saved scikit-learn model may contain beyond skops' default-trusted set: the fitted tree
# structure of RandomForest/GradientBoosting. Anything else in a .skops file is refused.
SKOPS_TRUSTED = frozenset({"sklearn.tree._tree.Tree"})
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+\.(skops|lgbm\.txt)$")


class LightGBMModel:
    """A LightGBM booster loaded from its text format, with the regressor's ``predict``."""

    def __init__(self, booster: Any) -> None:
        self.booster = booster

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(np.asarray(x, dtype=float)), dtype=float)


def save_model(model: Any, directory: Path, key: str) -> str:
    """Write one fitted model under ``directory``; returns its file name (relative to it)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    booster = getattr(model, "booster_", None)
    if isinstance(model, LightGBMModel):
        booster = model.booster
    if booster is not None:
        name = f"{stem}.lgbm.txt"
        booster.save_model(str(directory / name))
        return name
    import skops.io as sio

    name = f"{stem}.skops"
    sio.dump(model, directory / name)
    return name


def load_model(directory: Path, name: str, where: str) -> Any:
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise LlmplanError(f"{where}: model file {name!r} is not a models/*.skops or *.lgbm.txt name; re-fit")
    f = directory / MODEL_DIR / name
    if not f.is_file():
        raise LlmplanError(f"{where}: model file {MODEL_DIR}/{name} is missing; {_refit(directory)}")
    if name.endswith(".lgbm.txt"):
        import lightgbm as lgb

        try:
            return LightGBMModel(lgb.Booster(model_file=str(f)))
        except Exception as exc:  # noqa: BLE001 - LightGBM raises its own error types
            raise LlmplanError(
                f"{f} is not a LightGBM model ({type(exc).__name__}); {_refit(directory)}"
            ) from None
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=f))
    except Exception as exc:  # noqa: BLE001 - a damaged archive: zip/json errors of any kind
        raise LlmplanError(f"{f} is not a skops model ({type(exc).__name__}); {_refit(directory)}") from None
    extra = sorted(untrusted - SKOPS_TRUSTED)
    if extra:
        raise LlmplanError(
            f"{f} holds types a resource profile never contains ({', '.join(extra[:3])}); it is not "
            f"loaded; {_refit(directory)}"
        )
    try:
        model = sio.load(f, trusted=sorted(untrusted))
    except Exception as exc:  # noqa: BLE001
        raise LlmplanError(f"{f} cannot be loaded ({type(exc).__name__}); {_refit(directory)}") from None
    if not callable(getattr(model, "predict", None)):
        raise LlmplanError(f"{f} is not a regression model; {_refit(directory)}")
    return model


def _refit(path: Path) -> str:
    return f"re-fit it with `llmplan profile fit DATA.csv --out {path}`"


def load_profiler(cls: type, path: Path) -> Any:
    """The :class:`~llmplan.profile.profiler.ResourceProfiler` saved in ``path`` (see module doc)."""
    from llmplan.profile import cluster as kp
    from llmplan.profile.features import METRICS
    from llmplan.profile.regress import Selected

    doc_file = path / DOC
    if not path.is_dir() or not doc_file.is_file():
        if (path / LEGACY_PICKLE).is_file():
            raise LlmplanError(
                f"{path} holds a pickled profiler ({LEGACY_PICKLE}) from an older llmplan; pickles can "
                f"run code, so it is not loaded: {_refit(path)}"
            )
        raise LlmplanError(
            f"{path} holds no fitted profiler; run `llmplan profile fit DATA.csv --out {path}`"
        )
    where = str(doc_file)
    doc = mapping(read_json(doc_file, "profiler file", _refit(path)), where, _refit(path))
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise LlmplanError(
            f"{where} is not a version-{VERSION} llmplan resource profiler (format {doc.get('format')!r}, "
            f"version {doc.get('version')!r}); {_refit(path)}"
        )
    try:
        k = integer(doc["k"], f"{where}: k", lo=1, hi=1000)
        gamma = number(doc["gamma"], f"{where}: gamma", lo=0)
        scaler_d = mapping(doc["scaler"], f"{where}: scaler")
        mean = np.asarray(scaler_d["mean"], dtype=float)
        std = np.asarray(scaler_d["std"], dtype=float)
        if mean.shape != std.shape or not (
            np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()
        ):
            raise LlmplanError(f"{where}: scaler mean/std must be finite lists of one length, std > 0")
        protos = kp.Prototypes.from_dict(mapping(doc["prototypes"], f"{where}: prototypes"))
        if len(protos.categorical) != k or protos.numeric.shape[1] != mean.shape[0]:
            raise LlmplanError(f"{where}: {len(protos.categorical)} prototypes for k={k}; {_refit(path)}")
        loaded: dict[str, Any] = {}

        def sel(e: Any, what: str) -> Selected:
            e = mapping(e, f"{where}: {what}")
            name = e["file"]
            if name not in loaded:
                loaded[name] = load_model(path, name, where)
            cv = {
                str(a): float(b) for a, b in mapping(e.get("cv_mape", {}), f"{where}: {what}.cv_mape").items()
            }
            return Selected(str(e["name"]), cv, loaded[name])

        gm = mapping(doc["global_models"], f"{where}: global_models")
        global_models = {m: sel(gm[m], f"global_models.{m}") for m in METRICS}
        per = mapping(doc["models"], f"{where}: models")
        models = {
            c: {m: sel(mapping(per[str(c)], f"{where}: models.{c}")[m], f"models.{c}.{m}") for m in METRICS}
            for c in range(k)
        }
        floor = doc.get("memory_floor_mb")
        floor = None if floor is None else number(floor, f"{where}: memory_floor_mb", lo=0)
        description = doc.get("description", [])
        elbow = doc.get("elbow", {})
    except KeyError as exc:
        raise LlmplanError(f"{where} lacks {exc}; {_refit(path)}") from None
    except (TypeError, ValueError) as exc:
        raise LlmplanError(f"{where} is malformed ({exc}); {_refit(path)}") from None
    return cls(
        k, gamma, kp.Scaler(mean, std), protos, models, global_models,
        description=description if isinstance(description, list) else [],
        elbow=elbow if isinstance(elbow, dict) else {},
        memory_floor_mb=floor,
    )  # fmt: skip
