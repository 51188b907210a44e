"""llmplan's batch policies inside vLLM through its public interface: per-request priorities.

vLLM started with ``--scheduling-policy priority`` keeps its waiting queue sorted by each
request's ``priority`` (lower first; arrival order breaks ties) and, when KV blocks run out,
preempts the running request that sorts last. The front end sets that field from the *same*
:class:`~llmplan.batch.base.BatchPolicy` object the simulator and the built-in engine run: the
policy's :meth:`~llmplan.runtime.core.policy.BatchPolicy.order_key`, packed into one integer.

What a priority fixed at arrival can carry is an order, so only policies whose order is one key
per request qualify: ``fcfs``, ``sjf``, ``ljf`` and the continuous UELLM policies without their
time-dependent tiers. ``--admission slo-odbs|slo-dbs|odbs`` select those (``slo-odbs-cb`` etc.
with ``max_wait_s=None, defer_late=False``); anything else is refused with the reason.

The front end knows no more about a request's output than its ``max_tokens``, so that is the
predicted length the policy sees; deadlines come from the body's ``slo_ttft_s`` / ``slo_e2e_s``
(seconds after arrival at the front end).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from llmplan.batch import get_policy
from llmplan.batch.base import BatchPolicy
from llmplan.errors import LlmplanError
from llmplan.runtime.core.types import SeqState
from llmplan.workload.types import SLO, RequestSpec

# The front end's --admission names -> the batch policy (and settings) behind the priority.
# The continuous UELLM forms lose their two time-dependent tiers (aging after max_wait_s,
# deferring requests whose deadline passed): vLLM fixes a request's priority at arrival.
ADMISSION_POLICIES: dict[str, tuple[str, dict[str, Any]]] = {
    "fcfs": ("fcfs", {}),
    "slo-odbs": ("slo-odbs-cb", {"max_wait_s": None, "defer_late": False}),
    "slo-dbs": ("slo-dbs-cb", {"max_wait_s": None, "defer_late": False}),
    "odbs": ("odbs-cb", {"max_wait_s": None, "defer_late": False}),
}

_CHOICES = "fcfs, slo-odbs, slo-dbs, odbs, sjf or ljf"

# vLLM carries the priority as a 64-bit integer. A key of n fields gets 62 // n bits per field,
# each field at a resolution of 1/1000 (ms for deadlines, thousandths of a token for lengths).
_BITS = 62
_SCALE = 1000.0


def _why_not(policy: BatchPolicy) -> str:
    if policy.static:
        return "it batches statically (a batch runs to its longest member), which vLLM does not do"
    if policy.skip_blocked:
        return "it packs first-fit against the free KV each step, a scheduler's job, not a priority's"
    if not policy.time_invariant:
        return ("its order changes while a request waits (aging, deferring late requests), but vLLM fixes "
                "a request's priority at arrival")
    return "its order is not one key per request"


@dataclass(slots=True)
class VllmPriority:
    """Turns a request into vLLM's ``priority`` with a batch policy's order key."""

    policy: BatchPolicy
    # Deadlines are packed relative to this time (the front end's monotonic clock at start).
    epoch: float = 0.0
    _n: int = field(default=0, init=False)

    @classmethod
    def for_admission(cls, admission: str, epoch: float = 0.0) -> VllmPriority | None:
        """The priority for ``--admission NAME`` with ``--engine vllm``; None for fcfs (vLLM's own
        order). NAME is a front-end name (fcfs, slo-odbs, slo-dbs, odbs) or any batch policy
        (sjf, ljf, ...); one that no priority can express raises LlmplanError saying why."""
        name, kwargs = ADMISSION_POLICIES.get(admission, (admission, {}))
        try:
            policy = get_policy(name, **kwargs)
        except LlmplanError:
            msg = f"unknown --admission {admission!r}; with --engine vllm choose {_CHOICES}"
            raise LlmplanError(msg) from None
        probe = SeqState(spec=RequestSpec(rid=0, arrival_s=0.0, prompt_tokens=1, output_tokens=1))
        key = policy.order_key(probe)
        if key is None:
            raise LlmplanError(
                f"--admission {admission} cannot run inside vLLM as a request priority: {_why_not(policy)}; "
                f"choose {_CHOICES}"
            )
        if key == ():
            return None
        return cls(policy=policy, epoch=epoch)

    def seq(self, arrival_s: float, prompt_tokens: int, max_tokens: int, slo: SLO) -> SeqState:
        """The sequence the policy judges: what the front end knows of the request."""
        self._n += 1
        spec = RequestSpec(rid=self._n, arrival_s=arrival_s - self.epoch, prompt_tokens=prompt_tokens,
                           output_tokens=max_tokens, slo=slo)
        return SeqState(spec=spec, predicted_output_tokens=max_tokens, arrival_seq=self._n)

    def priority(self, arrival_s: float, prompt_tokens: int, max_tokens: int, slo: SLO) -> int:
        key = self.policy.order_key(self.seq(arrival_s, prompt_tokens, max_tokens, slo))
        if not key:
            return 0
        return pack(key)


def pack(key: tuple[float, ...]) -> int:
    """One signed 64-bit integer that sorts like ``key`` (lexicographically): each field becomes
    a fixed-point number in its own bit range; values beyond the range (``inf``: no deadline)
    clamp to its ends, so they still sort last (or first)."""
    width = _BITS // len(key)
    half = 1 << (width - 1)
    out = 0
    for x in key:
        q = half - 1 if x == math.inf else -half if x == -math.inf else round(x * _SCALE)
        out = (out << width) | (min(max(q, -half), half - 1) + half)
    return out - (1 << (width * len(key) - 1))
