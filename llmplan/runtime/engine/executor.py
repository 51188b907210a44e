"""The torch :class:`~llmplan.runtime.core.types.Executor`: real forward passes.

The serving core decides *what* runs (which sequences, how many tokens, which blocks); this
executor runs it over the paged KV cache, samples, and reports the wall time. It reads each
sequence's tokens from ``SeqState.prompt_token_ids + output_token_ids`` and its block table
from ``SeqState.block_ids``; ``SeqState.payload`` (a RequestState) carries the request's
:class:`~llmplan.runtime.engine.sampling.RequestSampler`.
"""

from __future__ import annotations

import time

import torch

from llmplan.runtime.core.types import ScheduledBatch, ScheduledSeq, StepResult
from llmplan.runtime.engine.api import SamplingParams
from llmplan.runtime.engine.kvcache import PagedKVCache
from llmplan.runtime.engine.model import LlamaModel
from llmplan.runtime.engine.request_state import RequestState
from llmplan.runtime.engine.sampling import RequestSampler, sample
from llmplan.runtime.engine.step_inputs import SeqWork, build_step_inputs

_GREEDY = RequestSampler(SamplingParams(temperature=0.0), 0)


def seq_work(item: ScheduledSeq) -> SeqWork:
    seq = item.seq
    tokens = seq.prompt_token_ids + seq.output_token_ids
    start, end = item.context_len, item.context_len + item.num_new_tokens
    if end > len(tokens):
        raise ValueError(
            f"request {seq.rid}: scheduled tokens [{start}, {end}) but only {len(tokens)} are known"
        )
    # A step samples when it computes the last known token: every decode step, and the last
    # chunk of a (re)prefill, whose final position is the prompt's or the recomputed output's end.
    return SeqWork(
        token_ids=tokens[start:end],
        context_len=start,
        block_ids=seq.block_ids,
        is_prefill=item.is_prefill,
        sample=end == len(tokens),
    )


def sampler_of(item: ScheduledSeq) -> RequestSampler:
    """The sampler of a scheduled sequence: its RequestState's, a bare RequestSampler payload
    (measurement runs), or greedy when it carries none."""
    p = item.seq.payload
    if isinstance(p, RequestState):
        return p.sampler
    if isinstance(p, RequestSampler):
        return p
    return _GREEDY


class TorchExecutor:
    def __init__(self, model: LlamaModel, kv: PagedKVCache, sync_device: bool = True) -> None:
        self.model = model
        self.kv = kv
        self.block_size = kv.block_size
        self.sync_device = sync_device and model.output_device.type == "cuda"
        self.steps = 0

    def run_work(self, work: list[SeqWork], samplers: list[RequestSampler]) -> list[int | None]:
        """Run one step of ``work``; the sampled token per entry (None where it does not sample)."""
        inputs = build_step_inputs(work, self.block_size, self.model.input_device)
        out: list[int | None] = [None] * len(work)
        if not inputs.order:
            self.model(inputs.input_ids, inputs.positions, inputs.meta, self.kv, inputs.logits_index)
            return out
        logits = self.model(inputs.input_ids, inputs.positions, inputs.meta, self.kv, inputs.logits_index)
        tokens = sample(logits, [samplers[i] for i in inputs.order])
        for i, t in zip(inputs.order, tokens, strict=True):
            out[i] = t
        return out

    def run_batch(
        self, batch: ScheduledBatch, work: list[SeqWork], samplers: list[RequestSampler]
    ) -> list[int | None]:
        """The step's forward and sampling; executors that run steps differently override this."""
        return self.run_work(work, samplers)

    def execute(self, batch: ScheduledBatch) -> StepResult:
        t0 = time.perf_counter()
        if not batch.items:
            return StepResult(duration_s=0.0, next_tokens={})
        work = [seq_work(it) for it in batch.items]
        samplers = [sampler_of(it) for it in batch.items]
        sampled = self.run_batch(batch, work, samplers)
        if self.sync_device:
            torch.cuda.synchronize()
        self.steps += 1
        nxt = {it.seq.rid: t for it, t in zip(batch.items, sampled, strict=True) if t is not None}
        return StepResult(duration_s=time.perf_counter() - t0, next_tokens=nxt)
