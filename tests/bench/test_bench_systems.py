"""Each compared system is defined once (llmplan.bench.systems): the simulated and the live
harness build the same router, roles, store and controller from it, or record the difference."""

from __future__ import annotations

import pytest

from llmplan.bench.live import LiveConfig, serve_argv
from llmplan.bench.systems import (
    REGISTRY,
    SYSTEMS,
    controller_hook,
    get_system,
    live_gaps,
    sim_gaps,
    system_config,
)
from llmplan.errors import LlmplanError
from llmplan.runtime.sim.cluster import build_instances


def _opt(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def _live_roles(argv: list[str]) -> list[str]:
    if "--workers" in argv:
        return ["both"]
    n = int(_opt(argv, "--instances") or 1)
    if _opt(argv, "--pd"):
        n_p, n_d = (int(x) for x in (_opt(argv, "--pd") or "").split(":"))
        return ["prefill"] * n_p + ["decode"] * n_d
    return ["both"] * n


@pytest.mark.parametrize("name", SYSTEMS)
def test_simulated_and_live_system_come_from_one_definition(name: str, tmp_path) -> None:
    d = get_system(name)
    sim = system_config(name, gpus=2, pd=(1, 1))
    live = serve_argv(name, LiveConfig(), 8000, 8001, tmp_path)

    # Router, roles and admission: the definition's, on both sides.
    assert sim.router == _opt(live, "--router") == d.router
    assert [s.role for s in build_instances(sim)] == _live_roles(live) == d.roles(2, (1, 1))
    assert _opt(live, "--admission") == d.admission

    # The controller runs in the simulator exactly when the definition says; live, a P:D
    # deployment cannot run it, and that is recorded rather than dropped silently.
    assert (controller_hook(sim) is not None) == d.controller
    live_controller = "--migration-controller" in live
    assert live_controller == d.controller or any("controller" in g for g in live_gaps(d))

    # The shared store: live deploys it when defined (and for a P:D hand-off, recorded);
    # the simulator has none and says so when the definition has one.
    live_store = _opt(live, "--kv-store") is not None
    assert live_store == d.kv_store or any("KV store" in g for g in live_gaps(d))
    assert any("KV store" in g for g in sim_gaps(d)) == d.kv_store


def test_the_comparison_systems_differ_as_defined(tmp_path) -> None:
    routers = {n: system_config(n, gpus=4, pd=(2, 2)).router for n in SYSTEMS}
    assert routers == {"vllm": "round-robin", "distserve": "least-loaded", "banaserve": "banaserve"}
    argv = {n: serve_argv(n, LiveConfig(), 8000, 8001, tmp_path) for n in SYSTEMS}
    assert {n: _opt(a, "--router") for n, a in argv.items()} == routers
    assert [_opt(argv[n], "--pd") for n in SYSTEMS] == [None, "1:1", "1:1"]


def test_a_live_only_system_is_refused_by_the_simulator_in_one_line(tmp_path) -> None:
    d = REGISTRY["banaserve-workers"]
    assert d.name not in SYSTEMS
    with pytest.raises(LlmplanError, match="runs live only") as e:
        system_config(d.name)
    assert "\n" not in str(e.value)
    argv = serve_argv(d.name, LiveConfig(), 8000, 8001, tmp_path)
    assert _opt(argv, "--workers") == "2" and "--migration-controller" in argv and "--instances" not in argv


def test_unknown_system_names_the_known_ones(tmp_path) -> None:
    for build in (
        lambda: system_config("sglang"),
        lambda: serve_argv("sglang", LiveConfig(), 1, 2, tmp_path),
    ):
        with pytest.raises(LlmplanError, match="unknown system 'sglang'; choose from vllm, distserve"):
            build()


@pytest.mark.slow  # deploys a real front end and two backends (~20 s)
def test_bench_live_records_each_systems_definition_and_what_it_does_not_realise(tmp_path) -> None:
    import json
    import os
    import subprocess
    import sys

    trace = tmp_path / "three.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,40,3\n0.1,60,3\n0.2,50,3\n")
    out = tmp_path / "rep"
    cmd = [sys.executable, "-m", "llmplan.cli.app", "bench", "--trace", f"file:{trace}", "--slo", "none",
           "--compare", "banaserve", "--live", "--out", str(out), "--no-plots"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads((out / "report.json").read_text())
    entry = report["config"]["systems"]["banaserve"]
    assert entry["definition"] == REGISTRY["banaserve"].to_dict()
    assert entry["not_realised"] == live_gaps(REGISTRY["banaserve"])
    deployed = report["config"]["deployments"]["banaserve"]
    assert deployed["router"] == "banaserve" and [i["role"] for i in deployed["instances"]] == [
        "prefill",
        "decode",
    ]
    assert "migration controller: not run" in (out / "report.md").read_text()
