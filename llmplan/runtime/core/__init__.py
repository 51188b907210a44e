"""The serving core: one scheduler loop, two clocks.

A :class:`Scheduler` per instance owns the :class:`~llmplan.runtime.core.types.SeqState` of
every request on it, a paged :class:`BlockManager`, admission through a batch policy
(:mod:`llmplan.batch`), iteration-level continuous batching with optional chunked prefill,
static batching (for the UELLM / S3 comparisons) and preemption by recompute. It never
computes anything and never reads a clock: an executor does the work, the caller passes
``now``.

How the real engine drives it (the simulator does exactly the same with a cost-model
executor and a virtual clock)::

    from llmplan.batch import get_policy
    from llmplan.runtime.core import Scheduler, SchedulerConfig, SeqState

    sched = Scheduler(
        SchedulerConfig(num_blocks=kv.num_blocks, block_size=16, chunked_prefill=True,
                        max_num_batched_tokens=512, max_num_seqs=64),
        policy=get_policy("fcfs"),
        stop=my_stop_rule,              # see below; default = simulator's OutputLengthStop
    )

    # on request arrival (engine thread):
    seq = SeqState(spec=RequestSpec(rid, arrival_s=now, prompt_tokens=len(ids),
                                    output_tokens=sampling.max_tokens),
                   prompt_token_ids=ids, payload=my_request_state)
    apply_prediction([seq], predictor.predict([spec]))  # optional: point, rank score, upper bound
    if not sched.add(seq, now):         # REJECTED: seq.finish_reason says why (-> HTTP 400)
        ...

    # the loop:
    while sched.has_work:
        batch = sched.schedule(time.monotonic())
        # batch.items: ScheduledSeq(seq, num_new_tokens, context_len, is_prefill).
        # Token ids to feed: (seq.prompt_token_ids + seq.output_token_ids)
        #     [context_len : context_len + num_new_tokens]
        # KV slots: seq.block_ids (block table); slot of token t = block_ids[t // bs]*bs + t % bs.
        # An item whose context_len + num_new_tokens == len(prompt)+len(output) must sample
        # one token; put it in StepResult.next_tokens[seq.rid]. Mid-prefill chunks sample none.
        result = executor.execute(batch)              # StepResult(duration_s, next_tokens)
        for seq in sched.update(batch, result, time.monotonic()):
            ...  # finished: seq.finish_reason in {"length", "stop", "eos", "max_model_len", ...}

    sched.abort(rid)   # client disconnected: frees its KV blocks wherever it was

Stop rules: ``update`` appends the sampled token to ``seq.output_token_ids`` and then calls
``stop(seq) -> reason | None``; an engine rule checks EOS / stop strings / max_tokens
(:class:`StopRule`; its ``steps_left`` returns None so the simulator-only decode fast-forward
stays off). ``max_model_len`` (default: the KV capacity) always stops a sequence, so one
sequence alone can always finish.

Preemption: when a running sequence needs a block and none is free, the most recently admitted
running sequence is preempted: its blocks are freed, ``num_computed_tokens`` drops to 0, it
goes to the front of the waiting queue and is later re-prefilled over prompt + generated
tokens (recompute). The engine sees this only as a prefill item with ``context_len == 0`` for
a sequence that already has output tokens. ``stats.preemptions`` counts them.

Counters for metrics (``sched.stats``): preemptions, misprediction_preemptions,
mispredictions (generated more than the booked bound: predicted_upper, else the point estimate),
padding_tokens (static batching), prefill/decode/recompute tokens, admitted/finished/rejected/aborted.
"""

from llmplan.runtime.core.blocks import BlockManager, blocks_for
from llmplan.runtime.core.policy import AdmissionView, BatchPolicy
from llmplan.runtime.core.scheduler import (
    OutputLengthStop,
    Scheduler,
    SchedulerConfig,
    SchedulerStats,
    StopRule,
)
from llmplan.runtime.core.types import (
    BatchPadding,
    Executor,
    FinishReason,
    ScheduledBatch,
    ScheduledSeq,
    SeqState,
    SeqStatus,
    StepResult,
)

__all__ = [
    "AdmissionView",
    "BatchPadding",
    "BatchPolicy",
    "BlockManager",
    "Executor",
    "FinishReason",
    "OutputLengthStop",
    "ScheduledBatch",
    "ScheduledSeq",
    "Scheduler",
    "SchedulerConfig",
    "SchedulerStats",
    "SeqState",
    "SeqStatus",
    "StepResult",
    "StopRule",
    "blocks_for",
]
