"""Trace loaders on the real Azure 2023 trace and on real files written here."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from llmplan.errors import LlmplanError
from llmplan.workload import load_workload, offered_rate, parse_window


def _csv_rows(base: Path, name: str) -> list[tuple[float, int, int]]:
    """Independent reading of the CSV with the csv module and datetime, to check the loader."""
    from datetime import datetime

    with open(base / "azure-llm-2023" / name) as f:
        rows = list(csv.DictReader(f))
    ts = [datetime.fromisoformat(r["TIMESTAMP"][:26]) for r in rows]
    t0 = min(ts)
    return [
        ((t - t0).total_seconds(), int(r["ContextTokens"]), int(r["GeneratedTokens"]))
        for t, r in zip(ts, rows, strict=True)
    ]


def test_azure_conv_full_trace(azure_data_dir: Path) -> None:
    t = time.perf_counter()
    wl = load_workload("azure")
    elapsed = time.perf_counter() - t
    ref = _csv_rows(azure_data_dir, "AzureLLMInferenceTrace_conv.csv")
    assert len(wl) == len(ref) == 19366
    assert wl.name == "azure-conv" and "Splitwise" in wl.meta["citation"]
    arr = np.array([r.arrival_s for r in wl.requests])
    assert np.all(np.diff(arr) >= 0) and arr[0] == 0.0
    assert [r.rid for r in wl.requests] == list(range(len(wl)))
    assert sum(r.prompt_tokens for r in wl.requests) == sum(p for _, p, _ in ref)
    assert sum(r.output_tokens for r in wl.requests) == sum(o for _, _, o in ref)
    # datetime keeps microseconds; the trace has 100 ns resolution.
    assert arr[-1] == pytest.approx(ref[-1][0], abs=1e-6)
    # Generous bound for a shared 2-core box; the measured figure is ~0.1 s (docs/bench.md).
    assert elapsed < 2.0


def test_azure_code_and_shaping(azure_data_dir: Path) -> None:
    ref = _csv_rows(azure_data_dir, "AzureLLMInferenceTrace_code.csv")
    want = [r for r in ref if 600.0 <= r[0] < 780.0]
    assert len(want) > 10
    wl = load_workload("azure-code", window=parse_window("10m:13m"), rate_scale=2.0)
    assert len(wl) == len(want)
    # Re-based to the window start, then compressed 2x in time.
    assert wl.requests[0].arrival_s == pytest.approx((want[0][0] - 600.0) / 2, abs=1e-6)
    assert wl.requests[-1].arrival_s == pytest.approx((want[-1][0] - 600.0) / 2, abs=1e-6)
    assert [(r.prompt_tokens, r.output_tokens) for r in wl.requests] == [(p, o) for _, p, o in want]
    capped = load_workload("azure-code", max_requests=7)
    assert len(capped) == 7 and capped.requests[6].prompt_tokens == ref[6][1]
    base = load_workload("azure-code", max_requests=500)
    fast = load_workload("azure-code", max_requests=500, rate_scale=4.0)
    assert offered_rate(fast) == pytest.approx(4 * offered_rate(base))


def test_window_parsing() -> None:
    assert parse_window("10m:20m") == (600.0, 1200.0)
    assert parse_window(":90") == (0.0, 90.0)
    assert parse_window("1h:") == (3600.0, None)
    assert parse_window(None) is None
    for bad in ("10", "5:5", "x:1", "1:2d"):
        with pytest.raises(LlmplanError, match="window"):
            parse_window(bad)


def test_file_csv_and_jsonl(tmp_path: Path) -> None:
    csv_path = tmp_path / "t.csv"
    # Unsorted seconds in llmplan's own column names; the loader sorts by arrival.
    csv_path.write_text("arrival_s,prompt_tokens,output_tokens\n2.0,30,3\n0.5,10,1\n1.0,20,2\n")
    wl = load_workload(f"file:{csv_path}")
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in wl.requests] == [
        (0.0, 10, 1),
        (0.5, 20, 2),
        (1.5, 30, 3),
    ]
    jl = tmp_path / "t.jsonl"
    rows = [
        {
            "TIMESTAMP": "2024-05-10 00:00:00.500000+00:00",
            "ContextTokens": 5,
            "GeneratedTokens": 6,
            "prompt": "hi",
        },
        {
            "TIMESTAMP": "2024-05-10 00:00:02.000000+00:00",
            "ContextTokens": 7,
            "GeneratedTokens": 8,
            "prompt": "yo",
        },
    ]
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    wl = load_workload(f"file:{jl}")
    assert [(r.arrival_s, r.prompt, r.output_tokens) for r in wl.requests] == [(0.0, "hi", 6), (1.5, "yo", 8)]


@pytest.mark.parametrize(
    "content, match",
    [
        ("when,prompt_tokens,output_tokens\n1,2,3\n", "no arrival column"),
        ("arrival_s,prompt_tokens,output_tokens\n1,2,0\n", "output token counts must be >= 1"),
        ("arrival_s,prompt_tokens,output_tokens\n1,2.5,3\n", "whole numbers"),
        ("arrival_s,prompt_tokens,output_tokens\n1,,3\n", "whole numbers"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,2,3\n", "ISO-8601"),
        ("arrival_s,prompt_tokens,output_tokens\n", "no rows"),
    ],
)
def test_file_errors_are_one_line(tmp_path: Path, content: str, match: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(LlmplanError, match=match) as exc:
        load_workload(f"file:{p}")
    assert "\n" not in str(exc.value)


def test_unknown_and_missing() -> None:
    with pytest.raises(LlmplanError, match="unknown trace"):
        load_workload("azur")
    with pytest.raises(LlmplanError, match="does not exist"):
        load_workload("file:/nonexistent/trace.csv")
    with pytest.raises(LlmplanError, match="empty after"):
        load_workload("synthetic:n=5,rate=1", window=(1000.0, 2000.0))


def test_azure_2024_schema_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The week-long 2024 files: same columns, timezone-aware timestamps, found under the data dir."""
    d = tmp_path / "azure-llm-2024"
    d.mkdir()
    (d / "AzureLLMInferenceTrace_code_1week.csv").write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2024-05-10 00:00:00.009930+00:00,2048,28\n"
        "2024-05-10 00:00:01.259930+00:00,13,2\n"
        "2024-05-10 00:00:03.009930+00:00,777,40\n"
    )
    monkeypatch.setenv("LLMPLAN_DATA_DIR", str(tmp_path))
    wl = load_workload("azure-code-2024")
    assert [(r.arrival_s, r.prompt_tokens) for r in wl.requests] == [(0.0, 2048), (1.25, 13), (3.0, 777)]
    assert wl.meta["sha256_expected"] is None and "DynamoLLM" in wl.meta["citation"]


def test_local_copy_with_other_sha256_is_flagged(azure_data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    good = load_workload("azure", max_requests=3)
    assert good.meta["sha256_matches"] is True and good.meta["sha256"] == good.meta["sha256_expected"]
    d = tmp_path / "azure-llm-2023"
    d.mkdir()
    src = (azure_data_dir / "azure-llm-2023" / "AzureLLMInferenceTrace_conv.csv").read_text().splitlines()
    (d / "AzureLLMInferenceTrace_conv.csv").write_text("\n".join(src[:100]) + "\n")
    monkeypatch.setenv("LLMPLAN_DATA_DIR", str(tmp_path))
    cut = load_workload("azure")
    assert len(cut) == 99 and cut.meta["sha256_matches"] is False
