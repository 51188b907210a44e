"""The front end's API key reaches its backends, which listen on 127.0.0.1 only and die with
it (even on SIGKILL); a front end refuses ports it did not open. Real CLI, real processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
from server_harness import free_port_run, wait_healthy

KEY = "sk-frontend-test"


def _llmplan(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmplan.cli.app", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_backends_bind_loopback_whatever_the_front_end_host():
    r = _llmplan("serve", "--instances", "2", "--dummy-weights", "llama-tiny", "--host", "0.0.0.0",
                 "--port", "9000", "--api-key", KEY, "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = [x for x in r.stdout.splitlines() if "(colocated)" in x]
    assert len(lines) == 2 and all("--host 127.0.0.1" in x for x in lines)
    assert KEY not in r.stdout, "the key goes to the backends in their environment, not their argv"


@pytest.mark.slow
def test_admin_on_the_network_without_a_key_is_refused():
    r = _llmplan("serve", "--dummy-weights", "llama-tiny", "--host", "0.0.0.0", "--enable-admin")
    assert r.returncode == 2
    err = r.stderr.strip() or r.stdout.strip()
    assert "--api-key" in err and "Traceback" not in err


@pytest.mark.slow
def test_a_front_end_refuses_ports_it_did_not_start(tmp_path):
    port = free_port_run(3)
    holder = socket.socket()
    holder.bind(("127.0.0.1", port + 2))  # the second backend's port, held by someone else
    holder.listen()
    try:
        t0 = time.monotonic()
        r = _llmplan("serve", "--instances", "2", "--dummy-weights", "llama-tiny", "--port", str(port),
                     "--log-dir", str(tmp_path / "logs"))
        took = time.monotonic() - t0
    finally:
        holder.close()
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert f"port {port + 2}" in err and "engine1" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir()), "nothing was started"
    print(f"\nrefused in {took:.1f}s")


@pytest.mark.slow
def test_keyed_front_end_passes_its_key_to_loopback_backends_that_die_with_it(tmp_path):
    port = free_port_run(3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LLMPLAN_API_KEY": KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", "serve", "--instances", "2",
         "--dummy-weights", "llama-tiny", "--port", str(port), "--num-kv-blocks", "64",
         "--log-dir", str(tmp_path / "logs")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    url, backend_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
    auth = {"Authorization": f"Bearer {KEY}"}
    backends: list[psutil.Process] = []
    try:
        wait_healthy(url, proc, timeout_s=150, what="front end")
        backends = psutil.Process(proc.pid).children(recursive=True)
        assert len(backends) >= 2
        body = {"prompt": [3, 4, 5], "max_tokens": 3, "ignore_eos": True}
        assert httpx.post(url + "/v1/completions", json=body, timeout=60).status_code == 401
        r = httpx.post(url + "/v1/completions", json=body, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3
        assert httpx.get(url + "/v1/models", headers=auth, timeout=10).status_code == 200
        # The backend itself wants the key too (it got it from the front end).
        assert httpx.post(backend_url + "/v1/completions", json=body, timeout=60).status_code == 401
        listening = {c.laddr.ip for b in backends for c in b.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert listening == {"127.0.0.1"}
        proc.kill()  # SIGKILL: no handler runs in the front end
        proc.wait(10)
        t0 = time.monotonic()
        gone = psutil.wait_procs(backends, timeout=60)[1]
        assert not gone, f"backends outlived their front end: {[p.pid for p in gone]}"
        print(f"\nbackends gone {time.monotonic() - t0:.1f}s after the front end's SIGKILL")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        for b in backends:  # only if the test failed before they died
            if b.is_running():
                b.kill()
