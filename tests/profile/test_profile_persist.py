"""The profiler saves and loads as data (JSON + skops + LightGBM text): identical predictions, no pickle,
an old pickle refused without being opened, a tampered file refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.profile import cluster as kp
from llmplan.profile import persist
from llmplan.profile.features import CATEGORICAL, METRICS, design_matrix
from llmplan.profile.profiler import ResourceProfiler
from llmplan.profile.regress import CANDIDATES, make

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_prof import synthetic_profile  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[ResourceProfiler, Path]:
    prof = ResourceProfiler.fit(synthetic_profile(120, seed=0), k=4, seed=0, n_estimators=15)
    return prof, prof.save(tmp_path_factory.mktemp("prof") / "p")


@pytest.mark.slow
def test_round_trip_predicts_identically_without_pickle(saved) -> None:
    prof, path = saved
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in files), files
    assert all(f.endswith((".json", ".skops", ".lgbm.txt")) for f in files), files
    again = ResourceProfiler.load(path)
    df = synthetic_profile(60, seed=7)
    a, b = prof.predict(df), again.predict(df)
    assert np.array_equal(a["cluster"], b["cluster"])
    for m in METRICS:
        assert np.allclose(a[m], b[m], rtol=1e-12, atol=0), m
    assert again.memory_floor_mb == prof.memory_floor_mb and again.description == prof.description


@pytest.mark.parametrize("name", CANDIDATES)
def test_each_model_kind_round_trips(tmp_path: Path, name: str) -> None:
    df = synthetic_profile(60, seed=2)
    x, y = design_matrix(df), df["max_mem_mb"].to_numpy(float)
    model = make(name, 0, n_estimators=10).fit(x, y)
    (tmp_path / persist.MODEL_DIR).mkdir()
    f = persist.save_model(model, tmp_path / persist.MODEL_DIR, f"m-{name}")
    assert f.endswith(".lgbm.txt" if name == "lightgbm" else ".skops")
    back = persist.load_model(tmp_path, f, "test")
    assert np.allclose(model.predict(x), back.predict(x), rtol=1e-12, atol=0)


def test_prototypes_assign_like_kmodes() -> None:
    df = synthetic_profile(100, seed=4)
    scaler = kp.fit_scaler(df)
    fitted = kp.kprototypes(df, 4, scaler, seed=0)
    new = synthetic_profile(80, seed=9)
    new.loc[:3, CATEGORICAL[0]] = "never-seen"  # an unseen category mismatches every prototype
    ours = kp.assign(kp.Prototypes.from_kmodes(fitted), new, scaler)
    theirs = kp.assign(fitted, new, scaler)
    assert np.array_equal(ours, theirs)


def test_skops_file_with_foreign_types_is_refused(saved, tmp_path: Path) -> None:
    import shutil

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    _, path = saved
    bad = tmp_path / "p"
    shutil.copytree(path, bad)
    doc = json.loads((bad / persist.DOC).read_text())
    victim = next(e["file"] for e in doc["global_models"].values() if e["file"].endswith(".skops"))
    sio.dump(FunctionTransformer(func=print), bad / persist.MODEL_DIR / victim)
    with pytest.raises(LlmplanError, match="holds types .*builtins.print.* re-fit"):
        ResourceProfiler.load(bad)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["global_models"]["max_mem_mb"].update(file="../../../etc/passwd"), "is not a models/"),
        (lambda d: d.update(version=1), "not a version-2"),
        (lambda d: d.update(k=0), "k must be"),
        (lambda d: d["scaler"].update(std=[0.0, 1.0]), "scaler"),
        (lambda d: d.pop("models"), "lacks 'models'"),
        (lambda d: d["prototypes"].update(numeric="x"), "malformed"),
    ],
)
def test_tampered_profiler_json_is_refused(saved, tmp_path: Path, edit, match: str) -> None:
    import shutil

    _, path = saved
    bad = tmp_path / "p"
    shutil.copytree(path, bad)
    doc = json.loads((bad / persist.DOC).read_text())
    edit(doc)
    (bad / persist.DOC).write_text(json.dumps(doc))
    with pytest.raises(LlmplanError, match=match):
        ResourceProfiler.load(bad)
