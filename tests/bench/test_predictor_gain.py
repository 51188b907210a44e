"""benchmarks/predictor_gain.py --quick, run as a script on real ShareGPT prompts and the real
simulator (oracle and const only: no trained model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "predictor_gain.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_quick_run_prints_the_gain_table_and_writes_consistent_numbers(tmp_path):
    out = tmp_path / "gain.json"
    cache = tmp_path / "cache"
    r = _run("--quick", "--predictors", "oracle,const", "--cache-dir", str(cache), "--json", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "## Gain kept: 200 held-out ShareGPT requests, 2 seeds" in r.stdout
    assert "| sjf | const |" in r.stdout and "| s3 | oracle |" in r.stdout
    res = json.loads(out.read_text())
    q = res["quality"]
    assert q["oracle"]["spearman"] == pytest.approx(1.0) and q["oracle"]["coverage"] == 1.0
    assert q["const"]["spearman"] is None and 0.0 < q["const"]["coverage"] < 1.0
    assert [ld["label"] for ld in res["loads"]] == ["trace", "~60%"]
    for load in res["loads"]:
        per = load["per"]
        arms = {f"{p}|{n}" for p in ("sjf", "s3", "slo-odbs-cb") for n in ("oracle", "const")}
        assert set(per) == {"fcfs"} | arms
        assert all(len(v) == 2 for v in per.values())
        # A constant prediction ties every request: SJF keeps arrival order, i.e. FCFS, seed by seed.
        assert [s["attainment"] for s in per["sjf|const"]] == [s["attainment"] for s in per["fcfs"]]
        # The oracle books exactly what each request needs: nothing outgrows its booking.
        assert all(s["mispredictions"] == 0 for s in per["s3|oracle"])
    assert sum(s["mispredictions"] for s in res["loads"][0]["per"]["s3|const"]) > 0
    assert len(list(cache.glob("const-*.json"))) == 1  # outputs cached per predictor


@pytest.mark.slow
def test_an_empty_cache_dir_writes_no_cache(tmp_path):
    args = ["--quick", "--predictors", "oracle,const", "--loads", "trace", "--cache-dir", ""]
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_exit_2_with_one_line():
    r = _run("--seeds", "1")
    assert r.returncode == 2 and "--seeds must be >= 2" in r.stderr
    r = _run("--predictors", "oracle,magic")
    assert r.returncode == 2 and "unknown predictor 'magic'" in r.stderr and "Traceback" not in r.stderr
    r = _run("--rates", "20,30")
    assert r.returncode == 2 and "--rates needs 3 positive rates" in r.stderr
    r = _run("--predictors", "const")
    assert r.returncode == 2 and "keep it in --predictors" in r.stderr
