"""Bad --workers / --layer-split input: one line naming the problem and the fix, nothing started."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.runtime.workers.stages import resolve_split


@pytest.mark.parametrize(("args", "words"), [
    (["--workers", "2", "--layer-split", "1,2"], "sums to 3 but the model has 4 layers"),
    (["--workers", "5"], "--workers 5 exceeds the model's 4 layers"),
    (["--workers", "2", "--layer-split", "1,1,2"], "names 3 worker(s) but --workers is 2"),
    (["--workers", "2", "--layer-split", "4,0"], "every worker needs at least one layer"),
    (["--workers", "2", "--layer-split", "a,b"], "is not a list of integers"),
    (["--layer-split", "2,2"], "need --workers 2 or more"),
    (["--workers", "2", "--instances", "2"], "shape one built-in instance"),
])
def test_bad_worker_flags_are_one_line_errors(args, words):
    r = CliRunner().invoke(app, ["serve", "--dummy-weights", "llama-tiny", "--port", "1", *args])
    assert r.exit_code != 0
    err = str(r.exception) if r.exception else r.output
    assert words in err and "\n" not in err.strip()


def test_split_defaults_plan_then_even():
    assert resolve_split(4, 2) == [(0, 2), (2, 4)]
    assert resolve_split(5, 2) == [(0, 2), (2, 5)]  # the remainder goes after rank 0 (it runs the head)
    assert resolve_split(4, 2, "1,3") == [(0, 1), (1, 4)]
    plan = {"stages": [{"device": "cpu", "layers": [0, 3]}, {"device": "cpu", "layers": [3, 4]}]}
    assert resolve_split(4, 2, plan=plan) == [(0, 3), (3, 4)]
    assert resolve_split(4, 4, plan=plan) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # plan has 2 stages, not 4


@pytest.mark.slow
def test_real_serve_with_two_workers_drains_on_sigterm_and_stops_its_workers():
    """`llmplan serve --workers 2` as a user runs it: serves, then SIGTERM exits 0 with no worker left."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx
    from server_harness import free_port, wait_healthy

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--dummy-weights", "llama-tiny", "--workers", "2",
         "--num-kv-blocks", "64", "--port", str(port), "--enable-admin"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout_s=90)
        pids = httpx.get(url + "/admin/workers").json()["pids"]
        r = httpx.post(url + "/v1/completions", json={"prompt": [5, 6, 7], "max_tokens": 4}, timeout=60)
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    out = proc.stdout.read()
    assert "2 workers" in out
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids), "a worker outlived its server"
