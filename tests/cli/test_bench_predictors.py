"""`bench --predictor const:N | noisy-cm:FILE` through the real CLI: the report scores the
predictor's draws on the replayed requests, and bad specs are one-line exit-2 errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from llmplan.cli.app import main  # noqa: F401 - the code under test (run through conftest.run_cli)
from llmplan.predict.buckets import bucket_of
from llmplan.predict.interface import DEFAULT_BUCKET_EDGES

from .conftest import assert_clean_error, run_cli

EDGES = list(DEFAULT_BUCKET_EDGES)
NB = len(EDGES)
TRACE = ["--trace", "synthetic:rate=2,n=60", "--instances", "1", "--jobs", "1", "--no-plots"]


def _cm(path: Path, matrix: np.ndarray | list, edges: list[int] = EDGES) -> str:
    path.write_text(json.dumps({"bucket_edges": edges, "matrix": np.asarray(matrix).tolist()}))
    return str(path)


def _bench(tmp: Path, predictor: str, seed: int = 0) -> tuple[dict, list[int], str]:
    out = tmp / f"rep-{abs(hash((predictor, seed)))}"
    res = run_cli(["bench", *TRACE, "--policy", "s3", "--predictor", predictor, "--seed", str(seed),
                   "--out", str(out)])  # fmt: skip
    assert res.code == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    with open(out / "requests-s3.csv") as f:
        truth = [int(r["output_tokens"]) for r in csv.DictReader(f)]
    s = report["config"]["predictor_scores"]
    assert f"predictor {predictor} on the {s['n']} replayed requests: exact bucket {s['exact']:.1%}" in (
        " ".join(res.stdout.split())
    )
    return s, truth, (out / "report.md").read_text()


def test_const_predictor_scores(tmp_path: Path) -> None:
    scores, truth, md = _bench(tmp_path, "const:100")
    y = bucket_of(truth, EDGES)
    b = int(bucket_of([100], EDGES)[0])
    assert scores["n"] == len(truth) == 60
    assert scores["exact"] == np.mean(y == b)
    assert scores["within1"] == np.mean(np.abs(y - b) <= 1)
    assert scores["underestimate"] == np.mean(b < y)
    assert scores["spearman"] is None  # a constant has no ranking
    assert "## Length predictor on the replayed requests" in md and "| const:100 | 60 |" in md


def test_confusion_matrix_drives_the_draws(tmp_path: Path) -> None:
    # Identity: every draw is the true bucket.
    scores, _, _ = _bench(tmp_path, "noisy-cm:" + _cm(tmp_path / "id.json", np.eye(NB)))
    assert scores["exact"] == 1.0 and scores["underestimate"] == 0.0 and scores["spearman"] > 0.9
    # One bucket up (the last stays): never exact below the last bucket, never under, always ±1.
    up = np.zeros((NB, NB))
    for i in range(NB):
        up[i, min(i + 1, NB - 1)] = 1.0
    scores, truth, _ = _bench(tmp_path, "noisy-cm:" + _cm(tmp_path / "up.json", up))
    y = bucket_of(truth, EDGES)
    assert scores["exact"] == np.mean(y == NB - 1)
    assert scores["within1"] == 1.0 and scores["underestimate"] == 0.0
    # A 50/50 row: the share drawn correct follows the matrix, and the seed fixes the draws.
    half = np.zeros((NB, NB))
    for i in range(NB):
        half[i, i] += 0.5
        half[i, max(i - 1, 0)] += 0.5
    f = "noisy-cm:" + _cm(tmp_path / "half.json", half)
    a, _, _ = _bench(tmp_path, f, seed=3)
    b, _, _ = _bench(tmp_path, f, seed=3)
    assert a == b
    assert 0.3 < a["exact"] < 0.85 and a["within1"] == 1.0 and 0.15 < a["underestimate"] < 0.7


def test_bad_predictor_specs_are_one_line(tmp_path: Path) -> None:
    empty = np.eye(NB)
    empty[:, :] = 0
    empty[0, 0] = 1.0  # only bucket [0,8) has examples
    cases = [
        ("const:x", "const:<tokens>"),
        ("const:0", "at least 1 token"),
        ("gbm:" + str(tmp_path), "not a saved prompt-length GBM"),
        ("gbm:", "write gbm:<DIR>"),
        ("noisy-cm:" + str(tmp_path / "missing.json"), "does not exist"),
        ("noisy-cm:" + _cm(tmp_path / "shape.json", np.eye(3)), "needs 10x10"),
        ("noisy-cm:" + _cm(tmp_path / "rows.json", np.eye(NB) * 0.5), "must sum to 1"),
        ("noisy-cm:" + _cm(tmp_path / "edges.json", np.eye(NB), [3, 8]), "start at 0"),
        ("noisy-cm:" + _cm(tmp_path / "empty.json", empty), "no examples of true bucket"),
        ("psychic", "unknown predictor"),
        ("learned:", "write learned:<DIR>"),
        ("learned:" + str(tmp_path), "not a saved length predictor"),
    ]
    (tmp_path / "junk.json").write_text("{not json")
    cases.append(("noisy-cm:" + str(tmp_path / "junk.json"), "not a confusion matrix"))
    for spec, needle in cases:
        res = run_cli(["bench", *TRACE, "--policy", "s3", "--predictor", spec, "--out", str(tmp_path / "r")])
        assert_clean_error(res, needle)
