"""`llmplan calibrate --ops / --profiles / --check` through the real CLI, on CPU with tiny dims."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmplan.opcost.profiles import GEMM_OPS, discover

pytestmark = pytest.mark.slow  # heavy module fixtures (servers, models, fits): full suite only


VIDUR = (
    Path(os.environ.get("LLMPLAN_DATA_DIR", "../shared/datasets")).resolve().parent
    / "gpu-profiles"
    / "vidur-2024"
)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "calibrate", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def cpu_profiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ops")
    for name in ("llama-tiny", "llama-120m"):
        r = _cli("--ops", "--dummy-weights", name, "--device", "cpu", "--out", str(root / name),
                 "--max-tokens", "8", "--repeats", "2", "--threads", "1")  # fmt: skip
        assert r.returncode == 0, r.stderr
    return root


def test_ops_writes_a_vidur_format_profile_that_reads_back(cpu_profiles: Path) -> None:
    profs = {p.meta.model: p for p in discover(cpu_profiles)}
    tiny = profs["llama-tiny"]
    assert tiny.meta.gpu == "cpu" and tiny.meta.source == "llmplan" and tiny.meta.dims.hidden_size == 256
    assert tiny.meta.extra["peak_flops"] > 0 and tiny.meta.extra["num_layers"] == 4
    assert tiny.tokens.tolist() == [1, 2, 4, 8]
    assert [(a[0], a[1], a[2]) for a in tiny.attention] == [
        ("prefill", 8, 0),
        ("decode", 1, 64),
        ("decode", 8, 64),
    ]
    assert all(a[4] > 0 for a in tiny.attention)
    for op in GEMM_OPS:
        assert (tiny.times[op] > 0).all()
    # the 120m model's up projection (768 -> 2x2048) costs more than the tiny one's (256 -> 2x688)
    assert profs["llama-120m"].times["mlp_up_proj"][-1] > tiny.times["mlp_up_proj"][-1]


def test_check_predicts_every_row_without_its_own_timings(cpu_profiles: Path) -> None:
    r = _cli("--check", str(cpu_profiles), "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    modes = {p["model"]: p["mode"] for p in d["profiles"]}
    assert modes == {"llama-tiny": "lomo", "llama-120m": "lomo"}  # each priced from the other only
    for p in d["profiles"]:
        assert p["fitted_on"] != p["model"]
        assert set(GEMM_OPS) <= set(p["ops"]) and all(p["ops"][op]["n"] == 4 for op in GEMM_OPS)
        # attention rows measured with the profile are checked too: one prefill, decode x1 and x8
        assert p["ops"]["attention_prefill"]["n"] == 1 and p["ops"]["attention_decode"]["n"] == 2
        assert [it["tokens"] for it in p["iterations"]] == [1, 8]  # decode 1 and 8 are in a 1..8 grid
    assert d["pooled"]["iteration"]["n"] == 4


def test_price_refuses_a_profile_of_other_dims_and_names_the_override(cpu_profiles: Path) -> None:
    r = _cli("--profiles", str(cpu_profiles / "llama-tiny"), "--price", "llama-2-7b")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--allow-profile-mismatch" in r.stderr and "hidden 256" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    ok = _cli("--profiles", str(cpu_profiles / "llama-tiny"), "--price", "llama-2-7b",
              "--allow-profile-mismatch", "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    rows = json.loads(ok.stdout)["price"]["rows"]
    assert rows[0]["non_attention_ms"] < rows[2]["non_attention_ms"]  # prefill 128 < prefill 2048


def test_profiles_out_writes_params_the_cost_model_loads(cpu_profiles: Path, tmp_path: Path) -> None:
    out = tmp_path / "params.json"
    r = _cli("--profiles", str(cpu_profiles), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert "cpu" in doc["gpus"] and "A100-SXM-80GB" in doc["gpus"]
    code = (
        "from llmplan.opcost.ops import fitted_gpu_params;"
        "p, own = fitted_gpu_params('cpu'); print(own, p.gemm.compute_eff)"
    )
    env = {**os.environ, "LLMPLAN_OPCOST_PARAMS": str(out)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert res.stdout.split()[0] == "True"
    assert float(res.stdout.split()[1]) == pytest.approx(doc["gpus"]["cpu"]["gemm"]["compute_eff"])


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path) -> None:
    r = _cli("--check", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    r = _cli("--check", str(tmp_path / "empty"))
    assert r.returncode == 2 and "no operator profile" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mlp.csv").write_text("a,b\n1,2\n")
    r = _cli("--profiles", str(bad))
    assert r.returncode == 2 and "not a Vidur-format operator table" in r.stderr
    r = _cli("--ops", "--device", "cpu")
    assert r.returncode == 2 and "--dummy-weights" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (VIDUR / "compute").is_dir(), reason="needs ../shared/gpu-profiles/vidur-2024")
def test_check_on_published_a40_profiles_meets_the_iteration_target(tmp_path: Path) -> None:
    """Leave-one-model-out over Vidur's A40 tables: per-iteration non-attention error within target."""
    r = _cli("--check", str(VIDUR / "compute" / "a40"), "--json")
    assert r.returncode == 0, r.stderr
    pooled = json.loads(r.stdout)["pooled"]["iteration"]
    assert pooled["median"] <= 0.10 and pooled["p90"] <= 0.20
