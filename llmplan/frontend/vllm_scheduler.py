"""llmplan's batch policies as vLLM's scheduler: a class vLLM loads by name.

    vllm serve MODEL --scheduler-cls llmplan.frontend.vllm_scheduler.PolicyScheduler
    # policy: LLMPLAN_VLLM_POLICY=slo-odbs-cb (default), any continuous llmplan.batch policy

The priority route (:mod:`llmplan.frontend.priority`) can only carry an order fixed at arrival.
This class replaces vLLM's waiting queue with one that asks the policy object itself, at every
admission, which waiting request goes next, so policies whose order changes while requests wait
(``slo-odbs-cb``'s aging and late-request tiers) run unchanged inside vLLM. vLLM keeps everything
else: KV allocation, chunked prefill, preemption (a preempted request comes back with its
progress, the policy's tier 0).

What the policy sees of a request: its prompt length, ``max_tokens`` as the predicted output,
its arrival time, and SLOs from ``vllm_xargs`` in the request body
(``{"slo_ttft_s": 2, "slo_tpot_s": 0.1, "slo_e2e_s": 30}``); ``llmplan serve --engine vllm
--vllm-route scheduler-cls`` sets them.

Not carried over: KV booking (``reserve = "predicted"``, S3-style): vLLM allocates KV on demand
in its own block manager and this class does not change that; policies that pack first-fit
(``s3``) or batch statically are refused.

Supported vLLM versions: 0.32.x (checked against the installed 0.32.0 source: ``Scheduler.waiting``
is a ``RequestQueue`` read by ``peek_request``/``pop_request``); others are refused with one line,
as the scheduler's internals change between releases. vLLM must import ``llmplan`` (its
venv needs llmplan's dependencies, or PYTHONPATH pointing at it with numpy and pandas present).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from typing import Any

import vllm
from vllm.v1.core.sched.request_queue import RequestQueue
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

from llmplan.batch.base import AdmissionView, BatchPolicy
from llmplan.frontend.vllm_compat import check_version, policy_from_env
from llmplan.runtime.core.types import SeqState
from llmplan.workload.types import SLO, RequestSpec


def _slo(request: Request) -> SLO:
    xargs = getattr(request.sampling_params, "extra_args", None) or {}

    def num(key: str) -> float | None:
        v = xargs.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None

    return SLO(ttft_s=num("slo_ttft_s"), tpot_s=num("slo_tpot_s"), e2e_s=num("slo_e2e_s"))


class PolicyRequestQueue(RequestQueue):
    """vLLM's waiting queue, ordered by an llmplan policy: ``peek``/``pop`` give the head of
    ``policy.select`` over the waiting requests at that moment."""

    def __init__(self, policy: BatchPolicy, view: Any) -> None:
        self.policy = policy
        self._view = view  # () -> AdmissionView, the scheduler's current state
        self._items: dict[str, tuple[Request, SeqState]] = {}
        self._seq = itertools.count()

    def _state(self, request: Request) -> SeqState:
        max_tokens = getattr(request, "max_tokens", None)
        spec = RequestSpec(rid=0, arrival_s=request.arrival_time, prompt_tokens=request.num_prompt_tokens,
                           output_tokens=max_tokens or 1, slo=_slo(request))
        return SeqState(spec=spec, predicted_output_tokens=max_tokens, arrival_seq=next(self._seq))

    def _head(self) -> Request:
        if not self._items:
            raise IndexError("peek from an empty queue")
        states = [s for _, s in self._items.values()]
        for (req, s) in self._items.values():
            s.num_generated = req.num_output_tokens  # preempted: progress to resume (tier 0)
        chosen = self.policy.select(states, self._view(), time.time())
        head = chosen[0] if chosen else min(states, key=lambda s: s.arrival_seq)
        return next(r for r, s in self._items.values() if s is head)

    def add_request(self, request: Request) -> None:
        self._items[request.request_id] = (request, self._state(request))

    def pop_request(self) -> Request:
        head = self._head()
        del self._items[head.request_id]
        return head

    def peek_request(self) -> Request:
        return self._head()

    def prepend_request(self, request: Request) -> None:
        self.add_request(request)  # the policy puts preempted requests first itself

    def prepend_requests(self, requests: Iterable[Request]) -> None:
        for r in requests:
            self.add_request(r)

    def remove_request(self, request: Request) -> None:
        self._items.pop(request.request_id, None)

    def remove_requests(self, requests: Iterable[Request]) -> None:
        for r in requests:
            self._items.pop(r.request_id, None)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Request]:
        return iter([r for r, _ in self._items.values()])


class PolicyScheduler(Scheduler):
    """vLLM's V1 scheduler with an llmplan policy choosing the next waiting request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_version(vllm.__version__)
        policy = policy_from_env()
        super().__init__(*args, **kwargs)
        if len(self.waiting):
            raise RuntimeError("PolicyScheduler must replace vLLM's waiting queue before any request arrives")
        self.waiting = PolicyRequestQueue(policy, self._admission_view)

    def _admission_view(self) -> AdmissionView:
        pool = self.kv_cache_manager.block_pool
        total = pool.num_gpu_blocks
        running = [
            SeqState(spec=RequestSpec(rid=0, arrival_s=r.arrival_time, prompt_tokens=r.num_prompt_tokens,
                                      output_tokens=r.max_tokens))
            for r in self.running
        ]
        return AdmissionView(
            free_blocks=pool.get_num_free_blocks(), total_blocks=total, block_size=self.block_size,
            num_running=len(self.running), max_num_seqs=self.max_num_running_reqs,
            token_budget=self.max_num_scheduled_tokens, running=running,
        )  # fmt: skip
