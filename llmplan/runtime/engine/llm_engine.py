"""The synchronous engine: the serving core's Scheduler driving the torch executor.

Each :meth:`LLMEngine.step` is one iteration of the one serving loop::

    batch = scheduler.schedule(now)
    result = executor.execute(batch)        # forward pass + sampling, wall-clock duration
    scheduler.update(batch, result, now)    # tokens appended, stop rule, blocks freed

The simulator runs the very same Scheduler (and batch policy) with a cost-model executor
and a virtual clock. What is engine-only lives here: token ids, the stop rule over sampled
tokens (max_tokens, EOS, stop strings), detokenization and streaming the increments.
Not thread-safe; :class:`~llmplan.runtime.engine.async_engine.AsyncLLMEngine` calls it
from its one engine thread.
"""

from __future__ import annotations

import math
import time
from collections import deque

from llmplan.predict.interface import apply_prediction
from llmplan.runtime.core.scheduler import Scheduler
from llmplan.runtime.core.stop import StopRule
from llmplan.runtime.core.types import SeqState, SeqStatus, StepResult
from llmplan.runtime.engine.api import EngineStats, GenerateOutput, GenerateRequest, InvalidRequestError
from llmplan.runtime.engine.config import ModelConfig
from llmplan.runtime.engine.executor import TorchExecutor
from llmplan.runtime.engine.request_state import RequestState, Sink, request_state
from llmplan.runtime.engine.sampling import RequestSampler
from llmplan.runtime.engine.tokenizer import IncrementalDetokenizer
from llmplan.workload.types import RequestSpec

# The core's finish reasons -> OpenAI's.
_FINISH = {"length": "length", "max_model_len": "length", "eos": "stop", "stop": "stop", "abort": "abort"}


class EngineStopRule(StopRule):
    """The core's StopRule for real tokens: max_tokens, EOS (unless ignore_eos), stop strings.

    Two parts: :meth:`observe` is the side effect (it advances the request's detokenizer over
    the new token to find stop strings, and records a sampling or detokenization failure in
    ``RequestState``); the scheduler calls it as its ``on_token`` hook right after appending a
    token. The check (:meth:`__call__`) then only reads that state. A request whose sampling
    failed this step, or whose stop handling raised, finishes with reason "error" (its
    ``RequestState.error`` says why); the other requests go on. ``steps_left`` is the
    protocol's default (None: it depends on sampled tokens)."""

    def observe(self, seq: SeqState[RequestState]) -> None:
        st = request_state(seq)
        if st.sampler.error is not None:
            st.error = st.error or st.sampler.error
        if st.error is not None:
            return
        try:
            sp = st.request.sampling
            if _is_eos(seq.output_token_ids, st):
                return  # EOS ends it; the text is finished by the final detokenization
            if sp.stop:
                delta, hit = st.detok.update(_visible(seq.output_token_ids, st), final=False)
                st.pending_text += delta
                if hit:
                    st.stopped_by_string = True
        except Exception as exc:  # noqa: BLE001 - fails this request only
            st.error = f"stop handling failed: {type(exc).__name__}: {exc}"

    def __call__(self, seq: SeqState[RequestState]) -> str | None:
        st = request_state(seq)
        if st.error is not None:
            return "error"
        if _is_eos(seq.output_token_ids, st):
            return "eos"
        if st.stopped_by_string:
            return "stop"
        if seq.num_generated >= st.request.sampling.max_tokens:
            return "length"
        return None


def _is_eos(ids: list[int], st: RequestState) -> bool:
    return bool(ids) and not st.request.sampling.ignore_eos and ids[-1] in st.eos_ids


def _visible(ids: list[int], st: RequestState) -> list[int]:
    # The EOS token itself is not part of the text.
    if ids and ids[-1] in st.eos_ids and not st.request.sampling.ignore_eos:
        return ids[:-1]
    return ids


class LLMEngine:
    def __init__(
        self,
        cfg: ModelConfig,
        executor: TorchExecutor,
        scheduler: Scheduler,
        tokenizer,
        model_name: str,
        max_model_len: int,
        seed: int = 0,
        predictor=None,
        recorder=None,
    ) -> None:
        self.cfg = cfg
        self.executor = executor
        self.scheduler = scheduler
        stop = EngineStopRule()
        self.scheduler.stop = stop
        self.scheduler.on_token = stop.observe
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.seed = seed
        self.predictor = predictor
        # UELLM's online correction: mispredicted (prompt, actual length) pairs are logged for
        # `llmplan predict update` (an object with observe(prompt, predicted_bucket, actual)).
        self.recorder = recorder
        eos = set(cfg.eos_token_ids)
        tok_eos = getattr(tokenizer, "eos_token_id", None)
        if tok_eos is not None:
            eos.add(int(tok_eos))
        self.eos_ids = frozenset(eos)
        # Optional per-iteration GPU clock control (llmplan.energy.live.LiveClockControl).
        self.clock_control = None
        self._t0 = time.perf_counter()
        self._next_rid = 0
        self._by_id: dict[str, SeqState] = {}
        self._finished_total = 0
        self._pred_correct = 0
        self._pred_total = 0
        self._finish_times: deque[float] = deque(maxlen=64)
        self.last_step: StepResult | None = None
        self._busy_s = 0.0  # seconds spent in executor steps (the simulator's busy time)

    # ------------------------------------------------------------------ clock and queries
    def now(self) -> float:
        return time.perf_counter() - self._t0

    def has_work(self) -> bool:
        return self.scheduler.has_work

    def num_waiting(self) -> int:
        return self.scheduler.num_waiting

    def recent_finish_rate(self) -> float:
        if len(self._finish_times) < 2:
            return 0.0
        span = self._finish_times[-1] - self._finish_times[0]
        return (len(self._finish_times) - 1) / span if span > 0 else 0.0

    def stats(self) -> EngineStats:
        sch = self.scheduler
        return EngineStats(
            waiting=sch.num_waiting,
            running=sch.num_running,
            kv_blocks_used=sch.blocks.num_used,
            kv_blocks_total=sch.blocks.num_blocks,
            preemptions_total=sch.stats.preemptions,
            finished_total=self._finished_total,
            predictor_correct=self._pred_correct,
            predictor_total=self._pred_total,
            waiting_tokens=sch.waiting_tokens,
            busy_seconds_total=self._busy_s,
            prefix_cache_queries_total=sch.blocks.query_tokens,
            prefix_cache_hits_total=sch.blocks.hit_tokens,
        )

    # ------------------------------------------------------------------ requests
    def validate(self, req: GenerateRequest) -> None:
        n = len(req.prompt_token_ids)
        sp = req.sampling
        if n == 0:
            raise InvalidRequestError("the prompt is empty; send at least one token", param="prompt")
        if sp.max_tokens < 1:
            raise InvalidRequestError(f"max_tokens must be >= 1 (got {sp.max_tokens})", param="max_tokens")
        if n + sp.max_tokens > self.max_model_len:
            raise InvalidRequestError(
                f"prompt ({n} tokens) + max_tokens ({sp.max_tokens}) exceeds the model's context of "
                f"{self.max_model_len} tokens; shorten the prompt or lower max_tokens",
                param="max_tokens" if n < self.max_model_len else "prompt",
            )
        if not (math.isfinite(sp.temperature) and sp.temperature >= 0):
            raise InvalidRequestError(f"temperature must be a number >= 0 (got {sp.temperature})",
                                      param="temperature")
        if not 0 < sp.top_p <= 1:
            raise InvalidRequestError(f"top_p must be in (0, 1] (got {sp.top_p})", param="top_p")
        if sp.top_k < -1:
            raise InvalidRequestError(f"top_k must be -1 (all tokens) or >= 1 (got {sp.top_k})",
                                      param="top_k")
        bad = next((t for t in req.prompt_token_ids if not 0 <= t < self.cfg.vocab_size), None)
        if bad is not None:
            raise InvalidRequestError(
                f"prompt token id {bad} is outside the vocabulary [0, {self.cfg.vocab_size})", param="prompt"
            )

    def add_request(self, req: GenerateRequest, sink: Sink) -> None:
        n = len(req.prompt_token_ids)
        try:
            self.validate(req)
            if req.request_id in self._by_id:
                raise InvalidRequestError(f"request_id {req.request_id!r} is already in flight")
        except InvalidRequestError as e:
            sink(GenerateOutput(req.request_id, [], "", True, "error", n, 0, error=str(e)))
            return
        now = self.now()
        rid = self._next_rid
        self._next_rid += 1
        sp = req.sampling
        st = RequestState(
            request=req,
            sink=sink,
            sampler=RequestSampler(sp, default_seed=hash((self.seed, rid)) & 0x7FFF_FFFF),
            detok=IncrementalDetokenizer(self.tokenizer, sp.stop),
            eos_ids=self.eos_ids,
        )
        # output_tokens is the cap the request runs to when nothing stops it earlier; with
        # ignore_eos (benchmarks) that is exactly its length, which oracle predictors read.
        text = req.prompt
        if text is None and self.predictor is not None:
            # Learned predictors read text; token-id prompts (benchmarks) are decoded for them.
            text = self.tokenizer.decode(list(req.prompt_token_ids))
        spec = RequestSpec(
            rid=rid,
            arrival_s=now,
            prompt_tokens=n,
            output_tokens=sp.max_tokens,
            prompt=text,
            slo=req.slo,
        )
        seq = SeqState[RequestState](spec=spec, prompt_token_ids=list(req.prompt_token_ids), payload=st)
        if self.predictor is not None:
            # The spec carries both the text (learned predictors) and the cap (oracles).
            apply_prediction([seq], self.predictor.predict([spec]))
        if not self.scheduler.add(seq, now):
            sink(GenerateOutput(req.request_id, [], "", True, "error", n, 0, error=seq.finish_reason))
            return
        self._by_id[req.request_id] = seq

    def abort_request(self, request_id: str) -> bool:
        seq = self._by_id.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.abort(seq.rid, self.now())
        self._emit_final(seq, "abort")
        return True

    def abort_all(self, reason: str = "abort", error: str | None = None) -> None:
        for request_id, seq in list(self._by_id.items()):
            self._by_id.pop(request_id, None)
            self.scheduler.abort(seq.rid, self.now())
            self._emit_final(seq, reason, error)

    # ------------------------------------------------------------------ one iteration
    def step(self) -> int:
        """Run one iteration; returns the number of sequences in it (0: nothing to do)."""
        sch = self.scheduler
        batch = sch.schedule(self.now())
        if not batch.items:
            return 0
        cc = self.clock_control
        if cc is not None:
            cc.before_step(batch, sch.waiting, self.now())
        result = self.executor.execute(batch)
        if cc is not None:
            cc.after_step(batch, float(result.duration_s))
        self.last_step = result
        self._busy_s += max(0.0, float(result.duration_s))
        done = sch.update(batch, result, self.now())
        finished = {id(s) for s in done}
        for it in batch.items:
            seq = it.seq
            if id(seq) in finished or seq.status is not SeqStatus.RUNNING:
                continue
            try:
                self._stream(seq)
            except Exception as exc:  # noqa: BLE001 - detokenizing one request fails it alone
                self._fail(seq, f"streaming failed: {type(exc).__name__}: {exc}")
        for seq in done:
            st = request_state(seq)
            self._by_id.pop(st.request.request_id, None)
            self._emit_final(seq, seq.finish_reason or "stop", st.error)
        return len(batch.items)

    def _fail(self, seq: SeqState, error: str) -> None:
        """End one request with ``error`` (its blocks freed) while the others go on."""
        st = request_state(seq)
        st.error = st.error or error
        if self._by_id.pop(st.request.request_id, None) is not None:
            self.scheduler.abort(seq.rid, self.now())
        self._emit_final(seq, "error", st.error)

    def _stream(self, seq: SeqState) -> None:
        st = request_state(seq)
        new_ids = seq.output_token_ids[st.streamed_tokens :]
        if not new_ids:
            return
        if not st.request.sampling.stop:
            delta, _ = st.detok.update(seq.output_token_ids, final=False)
            st.pending_text += delta
        text, st.pending_text = st.pending_text, ""
        st.streamed_tokens = len(seq.output_token_ids)
        st.sink(
            GenerateOutput(
                st.request.request_id,
                list(new_ids),
                text,
                prompt_tokens=seq.spec.prompt_tokens,
                completion_tokens=len(seq.output_token_ids),
            )
        )

    def _emit_final(self, seq: SeqState, reason: str, error: str | None = None) -> None:
        st = request_state(seq)
        if st.done:
            return
        st.done = True
        ids = seq.output_token_ids
        new_ids = ids[st.streamed_tokens :]
        if not st.stopped_by_string and error is None:
            try:
                delta, hit = st.detok.update(_visible(ids, st), final=True)
            except Exception as exc:  # noqa: BLE001 - fails this request only
                error = f"detokenization failed: {type(exc).__name__}: {exc}"
                delta, hit = "", False
            st.pending_text += delta
            if hit:
                reason = "stop"
        text, st.pending_text = st.pending_text, ""
        st.streamed_tokens = len(ids)
        finish = "error" if error else _FINISH.get(reason, reason)
        self._finished_total += 1
        self._finish_times.append(self.now())
        if self.predictor is not None and seq.predicted_bucket is not None and finish in ("stop", "length"):
            self._pred_total += 1
            self._pred_correct += int(self._bucket(len(ids)) == seq.predicted_bucket)
            if self.recorder is not None:
                self.recorder.observe(
                    seq.spec.prompt or "", seq.predicted_bucket, len(ids), predicted_upper=seq.predicted_upper
                )
        st.sink(
            GenerateOutput(
                st.request.request_id,
                list(new_ids),
                text,
                True,
                finish,
                prompt_tokens=seq.spec.prompt_tokens,
                completion_tokens=len(ids),
                error=error,
            )
        )

    def _bucket(self, n: int) -> int:
        edges = self.predictor.bucket_edges
        b = 0
        for i, e in enumerate(edges):
            if n >= e:
                b = i
        return b
