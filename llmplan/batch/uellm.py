"""UELLM's SLO- and output-length-aware dynamic batching (SLO-ODBS) and its two ablations.

Our reading of the thesis's Algorithm 3-1, as a static-batching policy (a batch runs until its
longest member finishes, so grouping similar lengths is what saves padding):

1. Sort the waiting requests by SLO: absolute E2E deadline ascending (requests without one
   last), ties by predicted output length (the predictor's rank score). With ``w2 == 0`` (ODBS)
   the SLO carries no weight and the sort is by predicted length alone.
2. Greedily grow a batch in that order. For a candidate batch ``B`` with longest predicted
   output ``M`` and longest prompt ``Pm``:

   * output term ``O(B) = sum_i (M - len_i) / (|B| * M)``: the share of decode slots that
     would be padding (0 when all lengths are equal);
   * SLO term ``S(B) = (deadline_last - deadline_first) / slo_scale_s``: how far the batch
     stretches across deadlines (0 when no member has an E2E SLO);
   * total ``w1 * O(B) + w2 * S(B)``; the request joins while the total stays <= ``threshold``.
3. The batch size adapts to the current maximum: at most
   ``min(max_batch_size, kv_capacity_tokens // (Pm + U))`` members, i.e. as many padded
   sequences as the KV pool holds at the batch's longest booked length ``U`` (the largest
   predicted upper bound; the point estimate where the predictor gives none).

The first request always forms a batch (nothing starves because of the threshold). The batch
closes at the first request that breaks a rule; the rest wait for the next batch, where new
arrivals are sorted in. SLO-DBS is ``w1 = 0``, ODBS is ``w2 = 0`` (default threshold 0.25: with
0.5 the output term alone, at most ``w1 = 0.5``, could never close a batch).

For comparisons against continuous batching use the ``-cb`` forms (:mod:`llmplan.batch.uellm_cb`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmplan.batch.base import AdmissionView, BatchPolicy, Reserve, booked_len, deadline, rank_key
from llmplan.runtime.core.types import SeqState


@dataclass(slots=True)
class SLOODBS(BatchPolicy):
    w1: float = 0.5
    w2: float = 0.5
    threshold: float = 0.5
    slo_scale_s: float = 60.0
    max_batch_size: int = 64
    name: str = "slo-odbs"
    static: bool = True
    reserve: Reserve = "predicted"
    uses_prediction: bool = True
    skip_blocked: bool = False
    time_invariant: bool = True

    def __post_init__(self) -> None:
        if self.w1 < 0 or self.w2 < 0 or (self.w1 == 0 and self.w2 == 0):
            raise ValueError(f"SLO-ODBS weights must be >= 0 and not both 0 (got w1={self.w1}, w2={self.w2})")
        if self.threshold < 0 or self.slo_scale_s <= 0 or self.max_batch_size < 1:
            raise ValueError("SLO-ODBS needs threshold >= 0, slo_scale_s > 0 and max_batch_size >= 1")

    def _key(self, s: SeqState) -> tuple[float, float, int]:
        if self.w2 == 0:
            return (0.0, rank_key(s), s.arrival_seq)
        return (deadline(s), rank_key(s), s.arrival_seq)

    def select(self, waiting: Sequence[SeqState], view: AdmissionView, now: float) -> Sequence[SeqState]:
        order = sorted(waiting, key=self._key)
        cap_tokens = view.capacity_tokens
        batch: list[SeqState] = []
        longest = longest_booked = 0
        longest_prompt = 0
        len_sum = 0
        first_deadline = 0.0
        for s in order:
            ln = max(1, s.predicted_output_tokens or 1)  # point estimate: the padding term
            m = max(longest, ln)
            mb = max(longest_booked, booked_len(s))  # upper bound: what the KV must hold
            pm = max(longest_prompt, s.spec.prompt_tokens)
            size = len(batch) + 1
            max_bs = min(self.max_batch_size, max(1, cap_tokens // (pm + mb)))
            if batch:
                if size > max_bs:
                    break
                out_term = (size * m - (len_sum + ln)) / (size * m)
                d_first, d_last = first_deadline, deadline(s)
                spread = d_last - d_first if d_last != float("inf") and d_first != float("inf") else 0.0
                slo_term = max(0.0, spread) / self.slo_scale_s
                if self.w1 * out_term + self.w2 * slo_term > self.threshold:
                    break
            else:
                first_deadline = deadline(s)
            batch.append(s)
            longest, longest_booked, longest_prompt, len_sum = m, mb, pm, len_sum + ln
        return batch


def SLODBS(**kw: object) -> SLOODBS:  # noqa: N802 - a policy name
    """SLO-aware dynamic batching without the output-length term (w1 = 0)."""
    kw.setdefault("w2", 0.5)
    return SLOODBS(name="slo-dbs", w1=0.0, **kw)  # type: ignore[arg-type]


def ODBS(**kw: object) -> SLOODBS:  # noqa: N802 - a policy name
    """Output-length-aware dynamic batching without the SLO term (w2 = 0)."""
    kw.setdefault("w1", 0.5)
    # With w2 = 0 the total is w1 * O <= w1 < 1; threshold 0.5 would never close a batch and
    # ODBS would equal static FCFS. 0.25: a batch closes once half its decode slots would pad.
    kw.setdefault("threshold", 0.25)
    return SLOODBS(name="odbs", w2=0.0, **kw)  # type: ignore[arg-type]
