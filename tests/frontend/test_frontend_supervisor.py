"""The supervisor runs real child processes: health waits, crash detection, restart, stop."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest

from llmplan.errors import LlmplanError
from llmplan.frontend.supervisor import InstanceSpec, Supervisor


def _run(coro):
    return asyncio.run(coro)


def test_starts_all_and_stops(tmp_path, free_port, stub_argv):
    specs = [
        InstanceSpec(name=f"i{k}", argv=stub_argv(p), port=p)
        for k, p in enumerate([free_port(), free_port()])
    ]

    async def go():
        sup = Supervisor(specs, log_dir=tmp_path, poll_interval_s=0.05)
        await sup.start()
        assert {s.name for s in sup.healthy()} == {"i0", "i1"}
        async with httpx.AsyncClient() as c:
            for s in specs:
                assert (await c.get(s.url + "/health")).status_code == 200
        await sup.stop(timeout_s=5)
        return sup

    sup = _run(go())
    kinds = [(e.instance, e.kind) for e in sup.events]
    for name in ("i0", "i1"):
        assert (name, "healthy") in kinds and (name, "stopped") in kinds
    assert all(st.proc.returncode is not None for st in sup.instances.values())


def test_crash_is_reported_and_restarted(tmp_path, free_port, stub_argv):
    port = free_port()
    spec = InstanceSpec(name="crashy", argv=stub_argv(port, "--crash-after", "1"), port=port)

    async def go():
        sup = Supervisor([spec], log_dir=tmp_path, poll_interval_s=0.05, restart_backoff_s=0.05)
        await sup.start()
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.HTTPError):
                await c.post(spec.url + "/v1/completions", json={"prompt": "x"})
        for _ in range(200):  # until the restarted process answers again (bounded: 10 s)
            st = sup.instances["crashy"]
            if st.restarts == 1 and st.status == "healthy":
                break
            await asyncio.sleep(0.05)
        await sup.stop(timeout_s=5)
        return sup

    sup = _run(go())
    kinds = [e.kind for e in sup.events]
    i_crash, i_restart = kinds.index("crashed"), kinds.index("restarting")
    assert i_crash < i_restart and "healthy" in kinds[i_restart:]
    crashed = next(e for e in sup.events if e.kind == "crashed")
    assert "exit code 3" in crashed.detail
    assert sup.instances["crashy"].restarts == 1


def test_gives_up_after_max_restarts(tmp_path, free_port, stub_argv):
    port = free_port()
    spec = InstanceSpec(name="flaky", argv=stub_argv(port, "--crash-after", "1"), port=port)

    async def go():
        sup = Supervisor(
            [spec], log_dir=tmp_path, poll_interval_s=0.05, restart_backoff_s=0.01, max_restarts=0
        )
        await sup.start()
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.HTTPError):
                await c.post(spec.url + "/v1/completions", json={})
        for _ in range(100):
            if sup.instances["flaky"].status == "failed":
                break
            await asyncio.sleep(0.05)
        await sup.stop(timeout_s=5)
        return sup

    sup = _run(go())
    assert sup.instances["flaky"].status in ("failed", "stopped")
    assert any(e.kind == "failed" for e in sup.events)


def test_instance_that_dies_at_start_names_exit_code_and_log(tmp_path, free_port):
    port = free_port()
    argv = [sys.executable, "-c", "import sys; print('boom: no model'); sys.exit(7)"]
    sup = Supervisor([InstanceSpec(name="dead", argv=argv, port=port)], log_dir=tmp_path, health_timeout_s=10)
    with pytest.raises(LlmplanError, match=r"dead exited with code 7.*boom: no model"):
        _run(sup.start())


def test_missing_binary_is_one_line_error(tmp_path, free_port):
    spec = InstanceSpec(name="x", argv=["/nonexistent/vllm", "serve"], port=free_port())
    with pytest.raises(LlmplanError, match="not found"):
        _run(Supervisor([spec], log_dir=tmp_path).start())


def test_duplicate_names_rejected(tmp_path):
    specs = [InstanceSpec(name="a", argv=["x"], port=1), InstanceSpec(name="a", argv=["x"], port=2)]
    with pytest.raises(LlmplanError, match="unique"):
        Supervisor(specs, log_dir=tmp_path)


@pytest.mark.slow
def test_a_crashed_instance_whose_port_was_taken_is_not_restarted(tmp_path, free_port, stub_argv):
    """Another process grabs the port between the crash and the restart: the supervisor must not
    take that process's health answers for its own instance."""
    import socket

    port = free_port()
    spec = InstanceSpec(name="crashy", argv=stub_argv(port, "--crash-after", "1"), port=port)
    squatter = socket.socket()

    async def go():
        sup = Supervisor([spec], log_dir=tmp_path, poll_interval_s=0.05, restart_backoff_s=1.0)
        await sup.start()
        async with httpx.AsyncClient() as c:
            with pytest.raises(httpx.HTTPError):
                await c.post(spec.url + "/v1/completions", json={"prompt": "x"})
        for _ in range(100):
            if sup.instances["crashy"].status != "healthy":
                break
            await asyncio.sleep(0.02)
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        for _ in range(200):
            if sup.instances["crashy"].status == "failed":
                break
            await asyncio.sleep(0.05)
        await sup.stop(timeout_s=5)
        return sup

    try:
        sup = _run(go())
    finally:
        squatter.close()
    failed = [e for e in sup.events if e.kind == "failed"]
    assert failed and "did not start" in failed[0].detail
    assert sup.instances["crashy"].restarts == 1 and [e.kind for e in sup.events].count("started") == 1
