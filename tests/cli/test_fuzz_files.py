"""Standing fuzz: hypothesis-generated topology, plan, calibration and trace files through the real
CLI. Whatever the file holds, the command exits 0 or 2; on 2 it prints exactly one ``error:`` line
(never the catch-all for bugs, never a traceback); on 0 the numbers it prints are finite; and each
run stays within a time bound. Examples are derandomized (reproducible in CI) and few, so the file
runs in well under a minute on two cores. ``LLMPLAN_FUZZ_EXAMPLES=500`` explores further (random,
that many examples per test) for a deeper local run.
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import CliResult, run_cli
from .test_bad_inputs import _base

_DEEP = int(os.environ.get("LLMPLAN_FUZZ_EXAMPLES", "0") or 0)
SETTINGS = settings(
    max_examples=_DEEP or 25,
    deadline=None,
    derandomize=not _DEEP,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TIME_BOUND_S = 30.0

# JSON values a careless or hostile file might hold where a number is expected.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 1e-300, 1e300, 2**63, -(2**63), 0.5]),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _check(res: CliResult, elapsed: float) -> None:
    assert elapsed < TIME_BOUND_S, f"took {elapsed:.1f} s"
    assert res.code in (0, 2), (res.code, res.stderr[-800:])
    assert "Traceback" not in res.stderr
    if res.code == 2:
        lines = res.error_lines
        assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
        assert "unexpected" not in lines[0], lines[0]


def _run(argv: list[str]) -> CliResult:
    t0 = time.perf_counter()
    res = run_cli(argv)
    _check(res, time.perf_counter() - t0)
    return res


def _finite_numbers(obj: Any) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite_numbers(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite_numbers(v) for v in obj)
    return True


def _mutate(doc: dict, path: list[Any], value: Any) -> dict:
    d = copy.deepcopy(doc)
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return d


def _mutated(doc: dict, mutations: list[tuple[list[Any], Any]]) -> dict:
    """``doc`` with each (path, value) set in turn; a path whose parent an earlier mutation
    removed is skipped, keeping what we have."""
    for path, value in mutations:
        try:
            doc = _mutate(doc, path, value)
        except (IndexError, KeyError, TypeError):
            continue
    return doc


def _write(d: Path, name: str, content: Any) -> Path:
    p = d / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif isinstance(content, str):
        p.write_text(content)
    else:
        p.write_text(json.dumps(content))  # NaN/Infinity literals included: Python's json writes them
    return p


TOPO_PATHS = [
    ["gpus", 0, "memory_gib"], ["gpus", 0, "bf16_tflops"], ["gpus", 0, "hbm_gbps"],
    ["gpus", 1, "power_limit_w"], ["gpus", 0, "tdp_w"], ["gpus", 0, "compute_scale"], ["gpus", 1, "index"],
    ["gpus", 0, "id"], ["links", 0, "bandwidth_gbps"], ["links", 0, "latency_us"], ["links", 0, "a"],
    ["gpus"], ["links"], ["version"],
]  # fmt: skip


@SETTINGS
@given(mutations=st.lists(st.tuples(st.sampled_from(TOPO_PATHS), ODD_VALUES), min_size=1, max_size=3))
@pytest.mark.slow
def test_fuzz_topology_file_through_plan(mutations) -> None:
    doc = _mutated(_base("topo"), mutations)
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d), "t.json", doc)
        res = _run(["plan", "--model", "llama-tiny", "--topology", f"file:{f}", "--json"])
        if res.code == 0:
            out = json.loads(res.stdout)
            assert _finite_numbers(out["metrics"]), out["metrics"]
            assert out["metrics"]["batch_latency_s"] > 0


PLAN_PATHS = [
    ["instances", 0, "stages", 0, "layer_start"], ["instances", 0, "stages", 0, "layer_end"],
    ["instances", 0, "stages", 0, "gpus"], ["instances", 0, "stages", 0, "prefill_s"],
    ["instances", 0, "stages", 0, "kv_gib"], ["instances", 0, "role"], ["instances"],
    ["workload", "max_batch"], ["workload", "input_len"], ["model_spec", "num_hidden_layers"],
    ["model_spec"], ["mode"], ["model"], ["metrics"], ["version"], ["a1"],
]  # fmt: skip


@SETTINGS
@given(mutations=st.lists(st.tuples(st.sampled_from(PLAN_PATHS), ODD_VALUES), min_size=1, max_size=3))
def test_fuzz_plan_file_through_plan_show(mutations) -> None:
    doc = _mutated(_base("plan"), mutations)
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d), "p.json", doc)
        _run(["plan", "--plan", str(f), "--json"])


CALIB_KEYS = ["const", "prefill_tokens", "prefill_attn", "decode_seqs", "decode_ctx"]


CALIB_PATHS = [["coef", k] for k in CALIB_KEYS] + [["coef"], ["version"], ["block_size"]]


@settings(SETTINGS, max_examples=_DEEP or 12)
@given(mutations=st.lists(st.tuples(st.sampled_from(CALIB_PATHS), ODD_VALUES), min_size=1, max_size=2))
def test_fuzz_calibration_file_through_bench(mutations) -> None:
    doc = _mutated(_base("calib"), mutations)
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d), "c.json", doc)
        res = _run([
            "bench", "--trace", "synthetic:n=8,rate=4", "--model", "llama-tiny", "--topology",
            "preset:2x-rtx4090", "--policy", "fcfs", "--calibration", str(f), "--no-plots", "--json",
            "--jobs", "1", "--out", f"{d}/rep",
        ])  # fmt: skip
        if res.code == 0:
            assert "NaN" not in res.stdout and "Infinity" not in res.stdout.replace('"inf', "")


CELL = st.one_of(
    st.integers(min_value=-(2**66), max_value=2**66).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "abc", "1e30", "10.5", "-0", "2023-11-16 18:15:46", "NaN", " 7 ", '"x,y"']),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
)


@settings(SETTINGS, max_examples=_DEEP or 15)
@given(rows=st.lists(st.lists(CELL, min_size=2, max_size=4), min_size=1, max_size=4))
def test_fuzz_trace_rows_through_bench(rows) -> None:
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "".join(f"{i},{10 + i},{5 + i}\n" for i in range(3))
    text += "".join(",".join(r) + "\n" for r in rows)
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d), "tr.csv", text)
        res = _run([
            "bench", "--trace", f"file:{f}", "--model", "llama-tiny", "--topology", "preset:2x-rtx4090",
            "--policy", "fcfs", "--no-plots", "--json", "--jobs", "1", "--out", f"{d}/rep",
        ])  # fmt: skip
        if res.code == 0:
            report = json.loads(res.stdout)
            for run in report["runs"].values():
                assert run["summary"]["requests"] >= 3


@settings(SETTINGS, max_examples=_DEEP or 20)
@given(
    kind=st.sampled_from(["t.json", "t.yaml", "t.txt", "p.json", "p.yaml", "c.json", "tr.csv", "tr.jsonl"]),
    content=st.one_of(st.binary(max_size=300), st.text(max_size=300)),
)
def test_fuzz_raw_bytes_for_every_file_kind(kind: str, content) -> None:
    with tempfile.TemporaryDirectory() as d:
        f = _write(Path(d), kind, content)
        bench = ["bench", "--model", "llama-tiny", "--topology", "preset:2x-rtx4090", "--policy", "fcfs",
                 "--no-plots", "--jobs", "1", "--out", f"{d}/rep"]  # fmt: skip
        if kind.startswith("t."):
            argv = ["topology", "--source", f"file:{f}"]
        elif kind.startswith("p."):
            argv = ["plan", "--plan", str(f)]
        elif kind.startswith("c."):
            argv = [*bench, "--trace", "synthetic:n=4", "--calibration", str(f)]
        else:
            argv = [*bench, "--trace", f"file:{f}"]
        _run(argv)
