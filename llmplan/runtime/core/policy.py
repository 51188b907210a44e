"""The batch-policy protocol the scheduler calls (implementations: :mod:`llmplan.batch`).

A policy decides *which waiting sequences to admit, in what order*; the scheduler owns
memory, preemption and the step loop. Both the simulator and the real engine drive the same
scheduler with the same policy objects.

Contract of :meth:`BatchPolicy.select`: return candidates in admission order. The scheduler
admits them one by one while KV blocks, ``max_num_seqs`` and the token budget allow. On the
first candidate that does not fit it stops (``skip_blocked = False``: head-of-line order, as
vLLM's FCFS) or tries the next one (``skip_blocked = True``: packing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from llmplan.runtime.core.types import SeqState

Reserve = Literal["none", "predicted"]


@dataclass(slots=True)
class AdmissionView:
    """What a policy may know about its instance when it picks candidates."""

    free_blocks: int
    total_blocks: int
    block_size: int
    num_running: int
    max_num_seqs: int
    token_budget: int  # tokens left in this step's budget
    # The running sequences (read-only), for policies that budget a share of the batch.
    running: Sequence[SeqState] = ()

    @property
    def capacity_tokens(self) -> int:
        return self.total_blocks * self.block_size


class BatchPolicy(Protocol):
    name: str
    # True: a batch runs until its longest member finishes; nothing joins it meanwhile
    # (finished members keep their slot as padding). False: iteration-level batching.
    static: bool
    # "none": KV grows on demand (vLLM paging). "predicted": prompt + predicted output is booked
    # at admission (S3/UELLM-style); a sequence that outgrows it grows on demand or is preempted.
    reserve: Reserve
    uses_prediction: bool
    skip_blocked: bool
    # True when select() depends only on the waiting/running state, not on ``now``: then, if
    # nothing was admitted at one step, nothing is admitted until a sequence finishes or
    # arrives, which lets the simulator fast-forward pure decode steps.
    time_invariant: bool

    # No instance dict: the policies subclass this protocol (for the default below) and stay slotted.
    __slots__ = ()

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]: ...

    def stable_until(self, waiting: Sequence[SeqState], now: float) -> float:
        """The earliest time at which select() may answer differently for the same
        waiting/running state (``inf``: never). Asked only of policies that are *not*
        time-invariant (they read ``now``, e.g. aging or deadline tiers); the scheduler exposes
        it as ``admission_stable_until`` so the simulator can still fast-forward decode steps up
        to that time. The default, ``now``, promises nothing; a policy that can say more
        overrides it.
        """
        return now

    def order_key(self, seq: SeqState) -> tuple[float, ...] | None:
        """This policy's admission order as a key fixed when ``seq`` arrives (lower goes first;
        arrival order breaks ties), or None when the order needs more than one key per request:
        static batches, first-fit packing, or tiers that change while a request waits.

        An engine that only orders its queue by a per-request priority (vLLM's
        ``--scheduling-policy priority``) can run the policy through this key
        (:mod:`llmplan.frontend.priority`). The default, None, claims nothing.
        """
        return None


@dataclass(slots=True)
class ContinuousFCFS(BatchPolicy):
    """Iteration-level batching in arrival order (vLLM's default scheduler).

    Head-of-line: if the oldest waiting request does not fit, nothing behind it is admitted,
    so a long prompt is never starved by a stream of short ones.
    """

    name: str = "fcfs"
    static: bool = False
    reserve: Reserve = "none"
    uses_prediction: bool = False
    skip_blocked: bool = False
    time_invariant: bool = True

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        return waiting  # the scheduler keeps it in arrival order (preempted first)

    def order_key(self, seq: SeqState) -> tuple[float, ...] | None:
        return ()  # arrival order alone
