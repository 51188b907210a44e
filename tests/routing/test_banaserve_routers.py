"""Load-aware (Algorithm 4-2), prefix-aware (SGLang cache_aware) and BanaServe routers on
hand-made load states whose right answer can be worked out by hand."""

from __future__ import annotations

import pytest

from llmplan.errors import LlmplanError
from llmplan.routing import get_router
from llmplan.routing.banaserve import BanaServeRouter
from llmplan.routing.base import InstanceLoad
from llmplan.routing.load_aware import LoadAwareRouter, instance_load
from llmplan.routing.prefix_aware import PrefixAwareRouter
from llmplan.workload.types import RequestSpec


def inst(i, busy=0.0, used=0, total=100, waiting=0, running=0, waiting_tokens=0, cached=None):
    return InstanceLoad(index=i, busy=busy, kv_blocks_used=used, kv_blocks_total=total, waiting=waiting,
                        running=running, waiting_tokens=waiting_tokens, cached_prefix_tokens=cached)


def req(rid=0, prompt=100, prefix_id=None, prefix=0):
    return RequestSpec(rid=rid, arrival_s=0.0, prompt_tokens=prompt, output_tokens=10,
                       prefix_id=prefix_id, prefix_tokens=prefix)


# ----------------------------------------------------------------------- Algorithm 4-2


def test_load_is_compute_share_plus_memory_share():
    assert instance_load(inst(0, busy=0.5, used=25)) == pytest.approx(0.75)
    assert instance_load(inst(0, busy=0.5, used=25, waiting_tokens=400), 1000) == pytest.approx(1.15)


def test_least_loaded_wins_outside_the_tie_band():
    # loads: 0.9+0.2=1.1, 0.3+0.5=0.8, 0.1+0.6=0.7 -> instance 2, even with the longest queue
    loads = [inst(0, 0.9, 20), inst(1, 0.3, 50, running=1), inst(2, 0.1, 60, running=9)]
    assert LoadAwareRouter(delta_l=0.05).route(req(), loads) == 2


def test_queue_length_breaks_ties_within_delta_l():
    # 0.72 and 0.70 are within delta_l=0.05: the shorter queue (instance 0) wins.
    loads = [inst(0, 0.42, 30, running=2), inst(1, 0.10, 60, running=7)]
    r = LoadAwareRouter(delta_l=0.05)
    assert r.route(req(), loads) == 0
    assert r.stats.tie_breaks == 1
    assert LoadAwareRouter(delta_l=0.0).route(req(), loads) == 1  # no band: strict minimum


def test_burst_spreads_across_equal_instances():
    """Same-instant arrivals see the same utilisation; the queue tie-break spreads them."""
    loads = [inst(i) for i in range(3)]
    r = LoadAwareRouter()
    picks = []
    for k in range(6):
        i = r.route(req(k), loads)
        picks.append(i)
        loads[i].waiting += 1  # what the caller's next snapshot shows
    assert sorted(picks) == [0, 0, 1, 1, 2, 2]


def test_full_memory_instance_is_skipped_while_another_has_room():
    loads = [inst(0, busy=0.0, used=99), inst(1, busy=0.9, used=50)]
    r = LoadAwareRouter(mem_full=0.98)
    assert r.route(req(), loads) == 1 and r.stats.skipped_full == 1
    assert r.route(req(), [inst(0, used=99), inst(1, used=100)]) == 0  # all full: least loaded


# ------------------------------------------------------------------ prefix-aware (SGLang)


def test_prefix_hit_wins_while_balanced():
    cached = {1: 80}
    loads = [inst(i, running=r, cached=lambda s, i=i: cached.get(i, 0)) for i, r in enumerate([2, 5, 3])]
    r = PrefixAwareRouter()
    assert r.route(req(prompt=100), loads) == 1  # 80% cached on instance 1 > threshold 0.5
    assert r.by_cache == 1


def test_low_match_goes_to_the_emptiest_cache():
    cached = {1: 30}
    loads = [inst(0, used=70, cached=lambda s: 0), inst(1, used=10, cached=lambda s: cached[1]),
             inst(2, used=40, cached=lambda s: 0)]
    r = PrefixAwareRouter(cache_threshold=0.5)
    assert r.route(req(prompt=100), loads) == 1  # 30% < 50%: least KV in use is instance 1
    assert r.by_capacity == 1


def test_imbalance_overrides_locality():
    # queue 60 vs 10: diff 50 > 32 and 60 > 1.5*10 -> shortest queue, not the cache hit.
    loads = [inst(0, running=60, cached=lambda s: 100), inst(1, running=10, cached=lambda s: 0),
             inst(2, running=20, cached=lambda s: 0)]
    r = PrefixAwareRouter()
    assert r.route(req(prompt=100), loads) == 1 and r.by_balance == 1
    # Diff 30 <= 32: still balanced by SGLang's rule, locality wins.
    loads[0].running = 40
    assert r.route(req(prompt=100), loads) == 0


def test_approximate_view_keeps_a_prefix_sticky_without_instance_reports():
    r = PrefixAwareRouter()
    loads = [inst(i) for i in range(4)]
    first = r.route(req(0, prompt=200, prefix_id=7, prefix=150), loads)
    loads[first].running += 3
    for k in range(1, 5):
        assert r.route(req(k, prompt=200, prefix_id=7, prefix=150), loads) == first
    other = r.route(req(9, prompt=200, prefix_id=8, prefix=150), loads)
    assert other != first  # a new prefix goes to an instance with an empty (approximate) cache
    s = r.summary()
    assert s["by_cache"] == 4 and s["decisions"] == 6


def test_prefix_aware_hot_spots_where_banaserve_spreads():
    """One hot prefix: prefix-aware piles it on one instance until the imbalance rule fires;
    BanaServe (any instance loads the prefix from the global store) keeps queues level."""
    def peak_spread(router):
        loads, peak = [inst(i) for i in range(4)], 0
        for k in range(40):
            i = router.route(req(k, prompt=200, prefix_id=1, prefix=180), loads)
            loads[i].waiting += 1
            q = [ld.waiting for ld in loads]
            peak = max(peak, max(q) - min(q))
        return peak

    assert peak_spread(PrefixAwareRouter(balance_abs_threshold=8, balance_rel_threshold=1.5)) == 9
    assert peak_spread(BanaServeRouter(store_prefix_tokens=lambda s: s.prefix_tokens)) == 1


# ---------------------------------------------------------------------------- BanaServe


def test_banaserve_ignores_locality_and_reports_store_hits():
    loads = [inst(0, busy=0.8, used=50, cached=lambda s: 100), inst(1, busy=0.1, used=10, cached=lambda s: 0)]
    r = BanaServeRouter(store_prefix_tokens=lambda s: 60)
    assert r.route(req(prompt=100), loads) == 1
    assert r.summary()["store_hit_token_rate"] == pytest.approx(0.6)
    assert loads[0].cached_prefix_tokens is not None  # the caller's snapshot is not mutated


def test_routers_are_registered_by_name():
    assert isinstance(get_router("banaserve"), BanaServeRouter)
    assert isinstance(get_router("prefix-aware", cache_threshold=0.3), PrefixAwareRouter)
    assert isinstance(get_router("load_aware", delta_l=0.1), LoadAwareRouter)


@pytest.mark.parametrize(
    "make",
    [
        lambda: LoadAwareRouter(delta_l=-1),
        lambda: LoadAwareRouter(mem_full=0),
        lambda: PrefixAwareRouter(cache_threshold=2),
        lambda: PrefixAwareRouter(balance_rel_threshold=0.5),
        lambda: BanaServeRouter(delta_l=-0.1),
        lambda: LoadAwareRouter().route(req(), []),
        lambda: get_router("banaserve", delta_l=-3),
    ],
)
def test_bad_options_are_clear_errors(make):
    with pytest.raises(LlmplanError):
        make()
