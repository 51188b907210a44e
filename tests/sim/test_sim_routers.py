"""Routers on hand-made load snapshots."""

import pytest

from llmplan.errors import LlmplanError
from llmplan.routing import InstanceLoad, get_router
from llmplan.workload.types import RequestSpec

REQ = RequestSpec(0, 0.0, 100, 10)


def _loads(*rows):
    return [InstanceLoad(index=k, waiting=w, running=r, kv_blocks_used=u, kv_blocks_total=100, busy=b,
                         waiting_tokens=wt) for k, (w, r, u, b, wt) in enumerate(rows)]


def test_round_robin_cycles_whatever_the_load():
    rr = get_router("round-robin")
    loads = _loads((9, 9, 99, 1.0, 0), (0, 0, 0, 0.0, 0), (0, 0, 0, 0.0, 0))
    assert [rr.route(REQ, loads) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_least_loaded_adds_compute_and_memory_shares_and_breaks_ties_by_queue():
    ll = get_router("least-loaded")
    # loads: 0.5 + 0.2 = 0.7 ; 0.1 + 0.5 = 0.6 ; 0.3 + 0.3 = 0.6 with a shorter queue
    loads = _loads((0, 1, 20, 0.5, 0), (2, 3, 50, 0.1, 0), (0, 2, 30, 0.3, 0))
    assert ll.route(REQ, loads) == 2
    capped = get_router("least-loaded", max_queue_per_instance=1)
    loads = _loads((5, 0, 0, 0.0, 0), (0, 9, 90, 0.9, 0))
    assert capped.route(REQ, loads) == 1  # instance 0 is cheap but its queue is over the cap


def test_jsq_counts_sequences_then_queued_tokens():
    jsq = get_router("jsq")
    loads = _loads((1, 3, 0, 0, 0), (2, 1, 0, 0, 5000), (0, 3, 0, 0, 0), (2, 1, 0, 0, 100))
    assert jsq.route(REQ, loads) == 2  # queues 4, 3, 3, 3; fewest queued prompt tokens among the 3s


def test_router_indices_refer_to_the_snapshot_not_positions():
    loads = [InstanceLoad(index=7, waiting=3), InstanceLoad(index=4, waiting=0)]
    assert get_router("jsq").route(REQ, loads) == 4


def test_unknown_router_is_a_one_line_error():
    with pytest.raises(LlmplanError, match="unknown router 'best'; choose one of"):
        get_router("best")


def test_routers_from_other_modules_load_on_first_use():
    import subprocess
    import sys

    # A fresh interpreter: nothing but llmplan.routing imported, yet every listed name resolves.
    code = (
        "from llmplan.routing import get_router, router_names\n"
        "names = router_names()\n"
        "print(len(names), ','.join(get_router(n).name for n in names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, built = out.split()
    assert len(built.split(",")) == int(count)
    assert set(built.split(",")) >= {"round-robin", "least-loaded", "jsq", "banaserve", "prefix-aware"}
