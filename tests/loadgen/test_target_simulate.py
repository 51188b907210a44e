"""`bench --target URL --simulate` simulates the deployment the server reports, nothing else."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmplan.cli.app import app
from llmplan.deployment import DeploymentSpec
from llmplan.errors import LlmplanError
from llmplan.runtime.calibration import CalibrationProfile

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_harness import running_server  # noqa: E402

runner = CliRunner()
TRACE = "synthetic:n=6,rate=20,prompt_mean=40,output_mean=4,max_prompt=80,max_output=8"


@pytest.fixture(scope="module")
def server():
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=16, num_kv_blocks=256, max_queue=64,
                          max_num_batched_tokens=1024)  # fmt: skip
    with running_server(engine) as url:
        yield url


def _profile(path: Path, **kw) -> Path:
    coef = {"const": 0.002, "prefill_tokens": 2e-5, "prefill_attn": 0.0}
    coef |= {"decode_seqs": 2e-4, "decode_ctx": 0.0}
    args = dict(coef=coef, model="llama-tiny", device="cpu", dtype="float32") | kw
    CalibrationProfile(**args).save(path)
    return path


def _bench(url: str, out: Path, *args: str):
    return runner.invoke(app, ["bench", "--target", url, "--simulate", "--trace", TRACE, "--no-plots",
                               "--jobs", "1", "--out", str(out), *args])  # fmt: skip


def test_server_reports_what_it_runs(server: str) -> None:
    data = httpx.get(server + "/v1/deployment", timeout=10).json()
    spec = DeploymentSpec.from_dict(data)
    assert spec.model == "llama-tiny" and spec.device == "cpu" and spec.weight_dtype == "float32"
    assert [i.num_kv_blocks for i in spec.instances] == [256]
    e = spec.engine
    assert (e.policy, e.max_num_seqs, e.max_num_batched_tokens, e.chunked_prefill) == ("fcfs", 16, 1024, True)
    assert e.max_model_len == 2048  # llama-tiny's context (the KV pool holds 4096 tokens)


def test_target_simulate_simulates_the_servers_own_deployment(server: str, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    res = _bench(server, out, "--calibration", str(_profile(tmp_path / "tiny.json")))
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "report.json").read_text())["config"]
    served = cfg["live_deployment"]
    assert served == httpx.get(server + "/v1/deployment", timeout=10).json()
    (label, simulated), = cfg["simulated"]["deployments"].items()
    assert label == "fcfs" and simulated["model"] == "llama-tiny" and simulated["device"] == "cpu"
    assert simulated["engine"] == served["engine"]
    assert [i["num_kv_blocks"] for i in simulated["instances"]] == [256]
    sim = cfg["simulated"]["simulator"]
    assert (sim["max_num_seqs"], sim["max_num_batched_tokens"], sim["max_model_len"]) == (16, 1024, 2048)
    assert cfg["simulated"]["cluster"]["cost_model"].startswith("calibration:")


@pytest.mark.slow
def test_target_simulate_refuses_what_it_cannot_price(server: str, tmp_path: Path) -> None:
    # A CPU server has no roofline: a measured profile is required.
    res = _bench(server, tmp_path / "a")
    assert isinstance(res.exception, LlmplanError) and "llmplan calibrate" in str(res.exception)
    # A profile of another model or device is refused, naming the override.
    for kw, what in (({"model": "llama-2-13b"}, "model llama-2-13b"), ({"device": "cuda:0"}, "device cuda:0"),
                     ({"dtype": "bfloat16"}, "dtype bfloat16")):  # fmt: skip
        res = _bench(server, tmp_path / "b", "--calibration", str(_profile(tmp_path / "other.json", **kw)))
        msg = str(res.exception)
        assert isinstance(res.exception, LlmplanError) and what in msg and "--allow-profile-mismatch" in msg
    res = _bench(server, tmp_path / "c", "--calibration", str(_profile(tmp_path / "other.json", model="x")),
                 "--allow-profile-mismatch")  # fmt: skip
    assert res.exit_code == 0, res.output
    zero = {"const": 0.0, "prefill_tokens": 0.0, "prefill_attn": 0.0, "decode_seqs": 0.0, "decode_ctx": 0.0}
    res = _bench(server, tmp_path / "d", "--calibration", str(_profile(tmp_path / "zero.json", coef=zero)),
                 "--allow-profile-mismatch")  # fmt: skip
    assert isinstance(res.exception, LlmplanError) and "zero" in str(res.exception)


def test_front_end_over_two_servers_is_simulated_as_two_instances(server: str, tmp_path: Path) -> None:
    """`llmplan serve --instances 2`'s front end reports both backends and its router; bench
    simulates those two instances with that router."""
    import contextlib
    import threading
    import time

    import uvicorn
    from server_harness import free_port

    from llmplan.frontend.backends import Backend, BackendPool
    from llmplan.frontend.proxy import Frontend, build_app
    from llmplan.routing import get_router
    from llmplan.runtime.factory import build_engine

    other = build_engine(dummy_weights="llama-tiny", max_num_seqs=16, num_kv_blocks=128, max_queue=64,
                         max_num_batched_tokens=1024)  # fmt: skip
    with running_server(other) as url2:
        pool = BackendPool([Backend("b0", server), Backend("b1", url2)], get_router("least-loaded"),
                           health_interval_s=0.1)  # fmt: skip
        port = free_port()
        app_server = uvicorn.Server(uvicorn.Config(build_app(Frontend(pool)), host="127.0.0.1", port=port,
                                                   log_level="warning"))  # fmt: skip
        thread = threading.Thread(target=app_server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not app_server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        front = f"http://127.0.0.1:{port}"
        try:
            spec = DeploymentSpec.from_dict(httpx.get(front + "/v1/deployment", timeout=10).json())
            assert [(i.name, i.role, i.num_kv_blocks) for i in spec.instances] == [("b0", "both", 256),
                                                                                    ("b1", "both", 128)]
            assert spec.router == "least-loaded" and spec.admission == "slo-odbs"
            out = tmp_path / "rep"
            res = _bench(front, out, "--calibration", str(_profile(tmp_path / "tiny.json")))
            assert res.exit_code == 0, res.output
            sim = json.loads((out / "report.json").read_text())["config"]["simulated"]
            assert sim["cluster"]["kv_blocks_per_instance"] == [256, 128]
            assert sim["simulator"]["router"] == "least-loaded"
            assert sim["cluster"]["admission_not_simulated"] == "slo-odbs"
        finally:
            app_server.should_exit = True
            with contextlib.suppress(Exception):
                thread.join(timeout=10)
