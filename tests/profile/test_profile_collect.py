"""`profile collect` against the real built-in server (llama-tiny, real uvicorn on 127.0.0.1)."""

from __future__ import annotations

import collections
import csv
import json
import os
import socket
import threading
import time

import pytest

from llmplan.errors import LlmplanError
from llmplan.predict.tokenize import count_tokens
from llmplan.profile.collect import collect, load_suite, select_prompts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    from llmplan.runtime.factory import build_engine
    from llmplan.runtime.server.run import ServeOptions, build_server

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=4, num_kv_blocks=128, max_queue=16)
    port = _free_port()
    server = build_server(engine, ServeOptions(port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)


def test_collect_writes_one_row_per_request(server_url, tmp_path) -> None:
    out = tmp_path / "p.csv"
    seen = []
    collect(
        server_url,
        out,
        limit=5,
        max_tokens=6,
        sampler="psutil",
        pid=os.getpid(),
        interval_s=0.01,
        on_row=seen.append,
    )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(seen) == 5
    suite = {r["id"]: r for r in select_prompts(load_suite(), limit=5)}
    assert [r["id"] for r in rows] == list(suite)  # the seeded shuffle's first five, in that order
    for row in rows:
        item = suite[row["id"]]
        assert row["task"] == item["task"] and row["lang"] == item["lang"]
        assert 1 <= int(row["output_tokens"]) <= 6
        assert int(row["input_tokens"]) == count_tokens([item["prompt"]])[0]
        assert float(row["latency_s"]) > 0 and float(row["max_mem_mb"]) > 50  # this process's RSS
        assert float(row["max_mem_mb"]) >= float(row["mean_mem_mb"]) > 0
        assert row["sampler"] == f"psutil-pid{os.getpid()}"


def test_collect_errors_keep_rows_and_name_the_fix(tmp_path) -> None:
    with pytest.raises(LlmplanError, match="cannot reach"):
        collect(f"http://127.0.0.1:{_free_port()}", tmp_path / "x.csv", limit=1, sampler="psutil")
    bad = tmp_path / "suite.jsonl"
    bad.write_text('{"id": "a", "prompt": "hi"}\n{"id": "b"}\n')
    with pytest.raises(LlmplanError, match=r"suite.jsonl:2:"):
        load_suite(bad)
    with pytest.raises(LlmplanError, match="NVML is unavailable|no process"):
        collect("http://127.0.0.1:1", tmp_path / "y.csv", sampler="nvml")


def test_shipped_suite_covers_tasks_languages_and_lengths() -> None:
    suite = load_suite()
    assert len(suite) >= 180 and len({r["id"] for r in suite}) == len(suite)
    counts = collections.Counter(r["task"] for r in suite)
    assert set(counts) >= {"generation", "summarization", "translation", "code", "qa", "chat"}
    by_lang = collections.Counter(r["lang"] for r in suite)
    assert by_lang["zh"] >= 60 and by_lang["en"] >= 60
    n = count_tokens([r["prompt"] for r in suite])
    assert min(n) <= 5 and max(n) >= 400
    json.dumps(suite, ensure_ascii=False)


def test_limit_samples_the_shuffled_suite_not_its_first_rows() -> None:
    """--limit N cuts after the seeded shuffle: 30 prompts span several tasks, not the file's first."""
    suite = load_suite()
    picked = select_prompts(suite, limit=30, seed=0)
    assert len(picked) == 30
    assert len({r["task"] for r in picked}) >= 4  # the file's first 30 are one task
    assert len({r["task"] for r in suite[:30]}) == 1
    assert select_prompts(suite, limit=30, seed=0) == picked  # seeded
    assert select_prompts(suite, limit=30, seed=1) != picked
    assert select_prompts(suite, limit=30, shuffle=False) == suite[:30]
    assert len(select_prompts(suite)) == len(suite)


def test_collect_records_joules_per_request_from_counter_deltas_else_modelled(server_url, tmp_path) -> None:
    import shutil
    from pathlib import Path

    from llmplan.energy.measure import EnergyMeter

    root = tmp_path / "powercap"
    shutil.copytree(Path(__file__).parents[1] / "energy" / "fixtures" / "powercap", root)
    counter = root / "intel-rapl:1" / "energy_uj"
    start = int(counter.read_text())
    tmp = root / "next_uj"
    stop = threading.Event()

    def burn() -> None:  # a package drawing ~1 kW while the collection runs (1 mJ per tick)
        uj = start
        while not stop.is_set():
            uj += 1000
            tmp.write_text(f"{uj}\n")
            os.replace(tmp, counter)  # whole at once, as the kernel's file reads
            time.sleep(0.001)

    t = threading.Thread(target=burn, daemon=True)
    t.start()
    try:
        collect(server_url, tmp_path / "e.csv", limit=3, max_tokens=4, sampler="psutil", pid=os.getpid(),
                meter=EnergyMeter(rapl_root=root, use_nvml=False))
    finally:
        stop.set()
        t.join()
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    burned = (int(counter.read_text()) - start) / 1e6
    assert [r["energy_source"] for r in rows] == ["rapl"] * 3
    assert all(float(r["energy_j"]) > 0 for r in rows)
    assert sum(float(r["energy_j"]) for r in rows) <= burned + 1e-6  # per request, within the run

    collect(server_url, tmp_path / "m.csv", limit=2, max_tokens=4, sampler="psutil", pid=os.getpid(),
            meter=EnergyMeter(rapl_root=tmp_path / "absent", use_nvml=False))
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [(r["energy_source"], r["energy_j"]) for r in rows] == [("modelled", "")] * 2
