"""llmplan's policy as vLLM's scheduler class (llmplan.frontend.vllm_scheduler).

The version and policy checks run everywhere. The queue tests need vLLM importable (they build
vLLM's own Request objects and run the policy over them); in CI, without vLLM, they are skipped.
"""

from __future__ import annotations

import time

import pytest

from llmplan.batch import get_policy
from llmplan.frontend.vllm_compat import check_version, policy_from_env


def test_other_vllm_versions_are_refused_with_one_line():
    check_version("0.32.0")
    check_version("0.32.1")
    for v in ("0.31.2", "0.33.0", "1.0.0"):
        with pytest.raises(RuntimeError) as e:
            check_version(v)
        assert v in str(e.value) and "0.32.x" in str(e.value) and "\n" not in str(e.value)


def test_policy_from_env_refuses_packing_and_static_batching():
    assert policy_from_env({}).name == "slo-odbs-cb"
    assert policy_from_env({"LLMPLAN_VLLM_POLICY": "sjf"}).name == "sjf"
    for name, why in (("s3", "first-fit"), ("static-fcfs", "static")):
        with pytest.raises(RuntimeError, match=why):
            policy_from_env({"LLMPLAN_VLLM_POLICY": name})


def _requests(specs):
    from vllm import SamplingParams
    from vllm.v1.request import Request

    now = time.time()
    return [
        Request(f"r{i}", list(range(3, 3 + prompt)), SamplingParams(max_tokens=out, extra_args=xargs), None,
                arrival_time=now - age)
        for i, (prompt, out, age, xargs) in enumerate(specs)
    ]


def _view():
    from llmplan.batch.base import AdmissionView

    return AdmissionView(free_blocks=1000, total_blocks=1000, block_size=16, num_running=0, max_num_seqs=32,
                         token_budget=2048)


def _drain(queue) -> list[str]:
    out = []
    while queue:
        assert queue.peek_request() is queue.peek_request()
        out.append(queue.pop_request().request_id)
    return out


def test_queue_serves_in_the_policys_order_sjf():
    pytest.importorskip("vllm")
    from llmplan.frontend.vllm_scheduler import PolicyRequestQueue

    q = PolicyRequestQueue(get_policy("sjf"), _view)
    for r in _requests([(8, 200, 0, None), (8, 10, 0, None), (8, 50, 0, None), (8, 10, 0, None)]):
        q.add_request(r)
    assert len(q) == 4
    assert _drain(q) == ["r1", "r3", "r2", "r0"]  # shortest max_tokens first, ties by arrival


def test_queue_runs_the_time_dependent_tiers_a_priority_cannot():
    """slo-odbs-cb defers a request whose TTFT deadline passed behind ones that can still make it,
    and ages one that waited past max_wait_s to the front: decided at pop time, not at arrival."""
    pytest.importorskip("vllm")
    from llmplan.frontend.vllm_scheduler import PolicyRequestQueue

    q = PolicyRequestQueue(get_policy("slo-odbs-cb", max_wait_s=30.0), _view)
    reqs = _requests([
        (8, 10, 5.0, {"slo_ttft_s": 2.0}),    # r0: deadline passed 3 s ago -> tier 2 (deferred)
        (8, 100, 0.0, {"slo_ttft_s": 20.0}),  # r1: 20 s left
        (8, 10, 0.0, {"slo_ttft_s": 5.0}),    # r2: 5 s left -> first of tier 1
        (8, 10, 40.0, {"slo_e2e_s": 100.0}),  # r3: waited 40 s > max_wait_s -> aged, tier 0
    ])  # fmt: skip
    for r in reqs:
        q.add_request(r)
    assert _drain(q) == ["r3", "r2", "r1", "r0"]
    q.add_request(reqs[0])
    q.remove_request(reqs[0])
    assert not q and len(q) == 0
