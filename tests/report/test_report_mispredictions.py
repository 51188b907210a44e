"""The terminal summary counts requests that outgrew their predicted bound, for runs with a
length predictor, and leaves the row out when no run had one."""

from __future__ import annotations

from rich.console import Console

from llmplan.bench.config import BenchConfig
from llmplan.bench.runner import run_bench
from llmplan.report.terminal import summary_table
from llmplan.workload.types import RequestSpec, Workload


def _text(rep) -> str:
    con = Console(record=True, width=200)
    con.print(summary_table(rep))
    return con.export_text()


def test_summary_shows_requests_that_outgrew_their_prediction():
    wl = Workload("hand", [RequestSpec(i, 0.01 * i, 32, 40 + 10 * i) for i in range(12)])
    cfg = BenchConfig(trace="synthetic", instances=1, policies=["fcfs", "s3"], predictor="const:32",
                      energy="off", record_token_times=False)  # fmt: skip
    rep = run_bench(cfg, workload=wl, workers=1)
    text = _text(rep)
    line = next(ln for ln in text.splitlines() if "outgrew prediction" in ln)
    # Every request generates more than 32 tokens: all 12 outgrow S3's booking; FCFS predicts nothing.
    cells = [c.strip() for c in line.split("│")[2:4]]
    assert cells[0] == "0 (0)" and cells[1].startswith("12 (")
    rep2 = run_bench(BenchConfig(trace="synthetic", instances=1, policies=["s3"], predictor="oracle",
                                 energy="off", record_token_times=False), workload=wl, workers=1)  # fmt: skip
    assert "outgrew prediction" not in _text(rep2)
