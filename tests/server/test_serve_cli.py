"""`llmplan serve` as a user runs it: a subprocess, the openai client, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import httpx
import openai
import pytest
from server_harness import free_port, wait_healthy


def _serve(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "llmplan.cli.app", "serve", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


@pytest.mark.slow  # > 5 s on 2 cores (pytest --durations)
def test_cli_serve_openai_stream_then_sigterm_drains_and_exits_0():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve("--dummy-weights", "llama-tiny", "--port", str(port), "--num-kv-blocks", "128",
                  "--max-num-seqs", "4", "--log-level", "warning")
    try:
        startup_s = wait_healthy(url, proc)
        print(f"\nllmplan serve healthy after {startup_s:.1f}s")
        assert startup_s < 60  # seconds on CPU, with slack for a loaded CI machine

        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        stream = client.completions.create(model="llama-tiny", prompt="Hello", max_tokens=6, stream=True)
        chunks = list(stream)
        assert chunks and chunks[-1].choices[0].finish_reason in ("length", "stop")

        # A long request in flight when SIGTERM arrives.
        lines: list[str] = []
        first = threading.Event()

        def in_flight() -> None:
            body = {"prompt": [500] * 8, "max_tokens": 150, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        lines.append(line)
                        first.set()

        worker = threading.Thread(target=in_flight)
        worker.start()
        assert first.wait(30)
        proc.send_signal(signal.SIGTERM)
        at_signal = len(lines)

        # New work is refused (503 while draining, or the socket is already closed).
        try:
            r = httpx.post(url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2}, timeout=10)
            assert r.status_code == 503, r.text
        except httpx.ConnectError:
            pass

        worker.join(120)
        assert not worker.is_alive()
        assert lines[-1] == "data: [DONE]"
        usage = [json.loads(x[6:])["usage"]["completion_tokens"] for x in lines[:-1]]
        assert usage[-1] == 150  # the in-flight request completed in full ...
        assert at_signal < len(lines) - 1  # ... and was still generating when the signal came
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the real console entry point in-process (no interpreter start-up per case)."""
    from llmplan.cli.app import main

    monkeypatch.setattr(sys, "argv", ["llmplan", "serve", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "exactly one of --model PATH or --dummy-weights"),
        (["--dummy-weights", "llama-tiny", "--model", "/nonexistent"], "exactly one of"),
        (["--model", "/nonexistent/dir"], "/nonexistent/dir does not exist"),
        (["--dummy-weights", "no-such-model", "--port", "PORT"], "no-such-model"),
        (["--dummy-weights", "llama-tiny", "--dtype", "int3", "--port", "PORT"], "int3"),
    ],
)
def test_cli_serve_bad_arguments_fail_in_one_line(monkeypatch, capsys, args, fragment):
    code, err = _main(monkeypatch, capsys, *(str(free_port()) if a == "PORT" else a for a in args))
    assert code == 2
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 or "error:" in err.splitlines()[0]


def test_cli_serve_port_in_use_fails_in_one_line(monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = str(s.getsockname()[1])
        code, err = _main(monkeypatch, capsys, "--dummy-weights", "llama-tiny", "--port", port)
    assert code == 2 and "in use" in err


@pytest.mark.slow  # a server subprocess: > 5 s on 2 cores
def test_cli_serve_config_runs_the_spec_and_shows_it(tmp_path):
    """serve --config SPEC: the spec's model and scheduler settings run, flags override them,
    and GET /v1/deployment reports what runs (a server's spec round-trips through a file)."""
    from llmplan.deployment import DeploymentSpec, EngineArgs, InstanceSpec

    spec = DeploymentSpec(
        model="llama-tiny", instances=[InstanceSpec("i0")], device="cpu", weight_dtype="float32",
        engine=EngineArgs(policy="sjf", max_num_seqs=5, max_num_batched_tokens=300, chunked_prefill=False),
    )  # fmt: skip
    spec.save(tmp_path / "spec.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve("--config", str(tmp_path / "spec.json"), "--policy", "fcfs", "--port", str(port),
                  "--num-kv-blocks", "64")  # fmt: skip
    try:
        wait_healthy(url, proc)
        shown = DeploymentSpec.from_dict(httpx.get(url + "/v1/deployment", timeout=5).json())
        assert shown.model == "llama-tiny" and shown.instances[0].num_kv_blocks == 64
        e = shown.engine
        # --policy overrides the file; the rest is the file's; the context is llama-tiny's 2048 capped
        # by the KV pool (64 x 16 = 1024 tokens)
        got = (e.policy, e.max_num_seqs, e.max_num_batched_tokens, e.chunked_prefill)
        assert got == ("fcfs", 5, 300, False)
        assert e.max_model_len == 1024
        assert httpx.get(url + "/v1/models", timeout=5).json()["data"][0]["max_model_len"] == 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
