"""prefix-bounded: cache affinity that never routes more than ``bound`` x the fair share."""

from __future__ import annotations

from collections import Counter

import pytest

from llmplan.errors import LlmplanError
from llmplan.routing import get_router
from llmplan.routing.base import InstanceLoad
from llmplan.workload.types import RequestSpec


def test_bound_holds_when_every_request_prefers_one_instance() -> None:
    r = get_router("prefix-bounded", bound=1.2)
    loads = [InstanceLoad(k, cached_prefix_tokens=(lambda s, k=k: 100 if k == 0 else 0)) for k in range(4)]
    picks = Counter(r.route(RequestSpec(i, 0.0, 120, 5), loads) for i in range(400))
    assert picks[0] == max(picks.values())
    assert max(picks.values()) / (400 / 4) <= 1.2 + 4 / 400
    # the prefix-aware router sends all of them to the cached instance (balanced queues)
    pa = get_router("prefix-aware")
    assert Counter(pa.route(RequestSpec(i, 0.0, 120, 5), loads) for i in range(400))[0] == 400


def test_affinity_follows_the_cache_and_misses_go_to_the_shortest_queue() -> None:
    r = get_router("prefix-bounded")
    loads = [InstanceLoad(0, waiting=1), InstanceLoad(1, waiting=0),
             InstanceLoad(2, waiting=5, cached_prefix_tokens=lambda s: 64)]  # fmt: skip
    assert r.route(RequestSpec(0, 0.0, 100, 5), loads) == 2
    cold = [InstanceLoad(0, waiting=1), InstanceLoad(1, waiting=0), InstanceLoad(2, waiting=5)]
    assert r.route(RequestSpec(1, 0.0, 100, 5), cold) == 1
    with pytest.raises(LlmplanError, match="bound must be >= 1"):
        get_router("prefix-bounded", bound=0.5)


def test_simulated_sessions_keep_hits_under_the_bound() -> None:
    from llmplan.runtime.sim import SimConfig, simulate
    from llmplan.workload import load_workload

    # two system prompts on four instances: affinity alone would leave two instances idle
    spec = "shared-prefix:groups=2,per_group=60,system_len=256,question_len=32,output_len=16,rate=6"
    wl = load_workload(spec)
    out = {}
    for name in ("prefix-aware", "prefix-bounded", "round-robin"):
        res = simulate(wl, SimConfig(instances=4, router=name, block_size=16))
        routed = Counter(rec.instance for rec in res.records)
        hit = res.counters["prefix_cache_hit_tokens"] / res.counters["prefix_cache_query_tokens"]
        out[name] = (max(routed.values()) / (len(wl) / 4), hit)
    assert out["prefix-aware"][0] >= 1.9  # piled on two instances
    assert out["prefix-bounded"][0] <= 1.2 + 4 / len(wl)
    assert out["prefix-bounded"][1] >= 0.9 * out["prefix-aware"][1]
