"""`bench --repeat K --warmup S`: intervals over real simulated seeds, warm-up exclusion, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.report.repeats import paired_difference, t_interval, verdict

runner = CliRunner()
TRACE = "synthetic:rate=30,n=240"


def _bench(out: Path, *args: str):
    argv = ["bench", "--jobs", "1", "--trace", TRACE, "--instances", "1", "--no-plots", "--energy", "off",
            "--out", str(out), *args]  # fmt: skip
    res = runner.invoke(app, argv, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads((out / "report.json").read_text()), res.output


def test_t_interval_by_hand() -> None:
    iv = t_interval([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.302653, half = t * sd / sqrt(3)
    assert iv["mean"] == 2.0 and iv["half"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert t_interval([5.0])["half"] is None and t_interval([])["mean"] is None
    assert verdict(t_interval([0.1, -0.1, 0.05]), True) == "tie"
    assert verdict(t_interval([0.1, 0.12, 0.11]), True) == "better"
    assert verdict(t_interval([0.1, 0.12, 0.11]), False) == "worse"


@pytest.mark.slow
def test_repeat_values_are_the_single_seed_runs(tmp_path: Path) -> None:
    rep, text = _bench(tmp_path / "rep", "--compare", "fcfs,sjf", "--repeat", "3", "--seed", "4")
    r = rep["repeats"]
    assert r["k"] == 3 and r["seeds"] == [4, 5, 6]
    assert "3 seeds (4, 5, 6): mean ± 95% CI" in text and "paired diff" in text
    for k, seed in enumerate(r["seeds"]):
        one, _ = _bench(tmp_path / f"s{seed}", "--compare", "fcfs,sjf", "--seed", str(seed))
        assert one["repeats"] == {}
        for label in ("fcfs", "sjf"):
            s = one["runs"][label]["summary"]
            assert r["metrics"][label]["attainment_all"]["values"][k] == s["attainment"]["all"]
            assert r["metrics"][label]["ttft_p99_s"]["values"][k] == s["latency"]["ttft_s"]["p99"]
    # the first seed's runs are the report's runs
    assert r["metrics"]["fcfs"]["goodput_rps"]["values"][0] == rep["runs"]["fcfs"]["summary"]["goodput_rps"]
    comp = {c["metric"]: c for c in r["comparisons"]}
    diffs = [b - a for a, b in zip(r["metrics"]["fcfs"]["ttft_p99_s"]["values"],
                                   r["metrics"]["sjf"]["ttft_p99_s"]["values"], strict=True)]  # fmt: skip
    assert comp["ttft_p99_s"]["diff"]["mean"] == pytest.approx(sum(diffs) / 3)
    lo, hi = comp["ttft_p99_s"]["diff"]["lo"], comp["ttft_p99_s"]["diff"]["hi"]
    assert comp["ttft_p99_s"]["verdict"] == ("tie" if lo <= 0 <= hi else ("better" if hi < 0 else "worse"))
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Repeated runs: 3 seeds" in md and "sjf − fcfs" in md
    # the report directory reads back with its intervals
    res = runner.invoke(app, ["report", str(tmp_path / "rep")], catch_exceptions=False)
    assert res.exit_code == 0 and "mean ± 95% CI" in res.output


def test_warmup_excludes_early_arrivals(tmp_path: Path) -> None:
    rep, _ = _bench(tmp_path / "w", "--policy", "fcfs", "--warmup", "3")
    s = rep["runs"]["fcfs"]["summary"]
    df = pd.read_csv(tmp_path / "w" / "requests-fcfs.csv")
    early = df["arrival_s"] < df["arrival_s"].min() + 3
    assert 0 < early.sum() < len(df) and df["in_warmup"].tolist() == early.tolist()
    assert s["warmup"] == {"warmup_s": 3.0, "excluded_requests": int(early.sum())}
    assert s["requests"] == len(df) - early.sum()
    assert s["attainment"]["all"] == pytest.approx(df.loc[~early, "slo_met"].mean())
    assert s["latency"]["ttft_s"]["p99"] == pytest.approx(df.loc[~early, "ttft_s"].dropna().quantile(0.99))
    res = runner.invoke(app, ["report", str(tmp_path / "w")], catch_exceptions=False)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeat", "0"], "--repeat must be a whole number"),
        (["--warmup", "-1"], "--warmup must be a finite number"),
        (["--warmup", "100000"], "covers the whole workload"),
        (["--repeat", "2", "--sweep-rate", "5,10"], "--repeat with --sweep-rate"),
        (["--repeat", "2", "--target", "http://127.0.0.1:9"], "--repeat/--warmup apply to simulated runs"),
    ],
)
@pytest.mark.slow
def test_bad_repeat_warmup_is_one_line_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "bench", "--trace", "synthetic:rate=5,n=50",
         "--policy", "fcfs", "--instances", "1", "--no-plots", "--out", str(tmp_path / "o"), *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "report.json").exists()



def test_equal_runs_up_to_float_noise_are_a_tie() -> None:
    # The same attainment reached through a different summation order differs by ~1e-17; the
    # paired interval of such differences must read as a tie, not as "better".
    base = [0.25, 0.25, 0.25]
    noisy = [0.25 + 2**-54] * 3  # one ulp above, on every seed: a zero-width interval off 0
    raw = [y - x for x, y in zip(base, noisy, strict=True)]
    assert all(r != 0 for r in raw) and verdict(t_interval(raw), True) != "tie"  # the noise is real
    d = t_interval([paired_difference(x, y) for x, y in zip(base, noisy, strict=True)])
    assert verdict(d, True) == "tie"
    assert paired_difference(1.0, 1.5) == 0.5 and paired_difference(2.0, 1.0) == -1.0
