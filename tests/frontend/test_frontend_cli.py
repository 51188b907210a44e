"""`llmplan serve --engine vllm | --instances N`: errors, dry run, and a real run stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from server_harness import free_port_run, wait_healthy

from llmplan.models import get_model_spec
from llmplan.plan.planner import make_plan
from llmplan.topology import load_topology


def _llmplan(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    make_plan(  # a pure pipeline (TP 1) plan: the test reads its stage devices
        get_model_spec("llama-2-70b"),
        load_topology("preset:dgx-a100"),
        "HE",
        topology="preset:dgx-a100",
        tp_degrees=(1,),
    ).save(path)
    return path


@pytest.mark.slow
def test_vllm_engine_without_vllm_says_how_to_install(plan_file):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable)}  # the venv has no `vllm`
    r = _llmplan("serve", "--engine", "vllm", "--plan", str(plan_file), env=env)
    assert r.returncode == 2
    assert "pip install 'llmplan[vllm]'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_vllm_engine_needs_a_plan():
    r = _llmplan("serve", "--engine", "vllm")
    assert r.returncode == 2 and "--plan" in r.stderr


@pytest.mark.slow
def test_dry_run_prints_one_command_per_instance(plan_file):
    r = _llmplan(
        "serve",
        "--engine",
        "vllm",
        "--plan",
        str(plan_file),
        "--dry-run",
        "--port",
        "9000",
        env={**os.environ, "COLUMNS": "300"},
    )
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("vllm0"))
    assert "vllm serve meta-llama/Llama-2-70b-hf" in line and "--port 9001" in line
    assert "--pipeline-parallel-size 2" in line and "CUDA_VISIBLE_DEVICES=0,1" in line
    assert "front end: http://127.0.0.1:9000" in r.stdout


@pytest.mark.slow
def test_bad_router_fails_before_starting_anything():
    r = _llmplan("serve", "--instances", "2", "--dummy-weights", "llama-tiny", "--router", "nope")
    assert r.returncode == 2 and "unknown router" in r.stderr


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_two_builtin_instances_serve_then_sigterm_stops_everything(tmp_path):
    port = free_port_run(3)  # front end, then --base-port's two backends
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmplan.cli.app",
            "serve",
            "--instances",
            "2",
            "--dummy-weights",
            "llama-tiny",
            "--port",
            str(port),
            "--base-port",
            str(port + 1),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=150, what="front end")
        backends = [c for c in psutil.Process(proc.pid).children(recursive=True)]
        assert len(backends) >= 2
        r = httpx.post(
            url + "/v1/completions",
            json={"prompt": [3, 4, 5], "max_tokens": 4, "ignore_eos": True},
            timeout=60,
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode in (0, -signal.SIGTERM, 130), out
    time.sleep(0.5)
    assert not [b for b in backends if b.is_running() and b.status() != psutil.STATUS_ZOMBIE], (
        "orphan backends"
    )
