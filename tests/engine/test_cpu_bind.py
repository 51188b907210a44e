"""`--cpu-bind`: the CPU list is checked against what the process may use, and the engine
thread's intra-op threads end up pinned one per CPU (read back from /proc)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import torch

from llmplan.errors import LlmplanError
from llmplan.runtime.engine import native

linux = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="CPU affinity is Linux-only")


@linux
def test_cpu_lists_are_parsed_and_checked():
    allowed = sorted(os.sched_getaffinity(0))
    assert native.parse_cpus("none", 2) is None
    assert native.parse_cpus("auto", 1) == (allowed[0],)
    assert native.parse_cpus(str(allowed[0]), None) == (allowed[0],)
    if len(allowed) >= 2:
        a, b = allowed[:2]
        assert native.parse_cpus(f"{a},{b}", 2) == (a, b)
        with pytest.raises(LlmplanError, match="names 2 CPU\\(s\\) for --threads 1; name one per thread"):
            native.parse_cpus(f"{a},{b}", 1)
    with pytest.raises(LlmplanError, match="among those this process may use"):
        native.parse_cpus(str(max(allowed) + 1000), None)
    with pytest.raises(LlmplanError, match="distinct"):
        native.parse_cpus(f"{allowed[0]},{allowed[0]}", None)
    with pytest.raises(LlmplanError, match="not a CPU list; give none, auto, or CPUs like 0-3"):
        native.parse_cpus("first-two", None)
    with pytest.raises(LlmplanError, match="--threads 4096 but this process may use"):
        native.parse_cpus("auto", 4096)


def _thread_cpus() -> dict[int, set[int]]:
    """CPUs each thread of this process may run on, from /proc (tid -> CPU set)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    lo, _, hi = part.partition("-")
                    cpus.update(range(int(lo), int(hi or lo) + 1))
                out[int(task.name)] = cpus
    return out


@linux
@pytest.mark.parametrize("n", [1, 2])
def test_the_engine_threads_are_pinned_one_per_cpu(n):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < n:
        pytest.skip(f"needs {n} CPUs")
    cpus = tuple(reversed(allowed[:n]))  # the calling thread on the last: not where it started
    seen: dict[str, object] = {}

    def engine_thread() -> None:  # as AsyncLLMEngine._loop does, on a thread of its own
        torch.set_num_threads(n)
        seen["how"] = native.bind_threads(cpus)
        seen["mine"] = os.sched_getaffinity(0)
        torch.ones(1 << 20).add_(1)  # a parallel region on the pinned team
        seen["all"] = _thread_cpus()
        seen["tid"] = threading.get_native_id()

    t = threading.Thread(target=engine_thread)
    t.start()
    t.join()
    assert seen["mine"] == {cpus[0]}, seen["how"]
    assert "pinned" in str(seen["how"])
    pinned = [c for c in seen["all"].values() if len(c) == 1]  # type: ignore[union-attr]
    for cpu in cpus:  # one thread pinned to each CPU of the list (the caller and its workers)
        assert {cpu} in pinned, (seen["how"], seen["all"])
    assert os.sched_getaffinity(0) == set(allowed)  # the test's own thread is untouched


@linux
def test_build_engine_takes_the_list_and_its_length_as_threads():
    from llmplan.runtime.factory import build_engine

    cpu = sorted(os.sched_getaffinity(0))[0]
    threads = torch.get_num_threads()
    try:
        eng = build_engine(dummy_weights="llama-tiny", num_kv_blocks=16, block_size=16, cpu_bind=str(cpu))
        assert eng.cpu_bind == (cpu,) and eng.threads == 1
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(LlmplanError, match="name one per thread"):
        build_engine(
            dummy_weights="llama-tiny", num_kv_blocks=16, block_size=16, cpu_bind=str(cpu), threads=2
        )
