"""The one cost model: roofline prefill/decode time per layer and stage transfers.

The planner (HELR, P:D) and the simulator both price work here; a calibration profile
measured on a real engine can replace it behind the same :class:`IterationCost` protocol.
(Filled in by the planning work, issue 3.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BatchShape:
    """Aggregate shape of one iteration; O(1) to price, whatever the batch size.

    prefill_tokens:  new prompt tokens computed this step (sum of chunk lengths)
    prefill_attn:    sum over prefilling sequences of new_tokens * (context + new_tokens / 2),
                     i.e. the number of query-key pairs the causal attention touches
    decode_seqs:     sequences producing one token this step
    decode_ctx:      sum of their context lengths (KV tokens read by attention)
    """

    prefill_tokens: int = 0
    prefill_attn: float = 0.0
    decode_seqs: int = 0
    decode_ctx: int = 0


class IterationCost(Protocol):
    def iteration_time(self, shape: BatchShape) -> float:
        """Seconds one iteration of this shape takes on the instance."""
        ...
