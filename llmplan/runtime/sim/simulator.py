"""The discrete-event cluster simulator: the engine loop with a virtual clock.

Each instance is a :class:`~llmplan.runtime.core.Scheduler` plus a cost-model executor; the
loop is the engine's (``schedule -> execute -> update``), driven by a heap of events:

* arrivals (from the workload, in time order) are routed to an instance with a
  :class:`~llmplan.routing.Router` over a load snapshot and queued there; a closed-loop
  session's next turn (``RequestSpec.follows``) arrives ``think_s`` after the simulated end of
  the turn it follows, on the virtual clock;
* a step end applies the step (``update``) and starts the next step at once if there is work;
* hand-offs (P/D disaggregation) bring a prefilled request and its KV to a decode instance
  after the transfer time;
* ticks sample every instance for utilisation-over-time plots.

Decode fast-forward: when a step is a pure decode step that the scheduler says will repeat
unchanged until a sequence finishes (:meth:`Scheduler.decode_run_limit`: no admission
possible, no preemption, enough free blocks), the whole run of identical steps is priced in
closed form (:func:`~llmplan.runtime.sim.pricing.decode_run`) and applied at once when it
ends. Nothing outside an instance can change its inputs except an arrival or hand-off routed
to it (or a controller hook), so other instances' events never cut a run. When such an input
does arrive, :meth:`Simulation.materialize` first applies the steps that ended before it and
turns the step in flight into an ordinary step; routers and samples read an in-flight run's
KV usage and busy time analytically. The results equal the step-by-step model (tested with
``fast_forward=False``), at a cost proportional to events, not tokens.
"""

from __future__ import annotations

import functools
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.metrics.types import InstanceSample, RequestRecord, RunResult
from llmplan.plan.costmodel import BatchShape
from llmplan.predict.interface import apply_prediction
from llmplan.routing.base import InstanceLoad
from llmplan.runtime.core.blocks import blocks_for
from llmplan.runtime.core.limits import placement, reject
from llmplan.runtime.core.scheduler import Scheduler, serving_config
from llmplan.runtime.core.types import ScheduledBatch, SeqState, SeqStatus, StepResult
from llmplan.runtime.sim.cluster import build_instances, model_context
from llmplan.runtime.sim.config import InstanceSpec, SimConfig
from llmplan.runtime.sim.pricing import CostExecutor, DecodeRun, batch_shape, decode_run
from llmplan.workload.types import RequestSpec, Workload

# Event kinds, in the order they are handled at equal times: external inputs first, then step
# ends, then kicks (an idle instance that got work starts a step only after every arrival of
# that instant is queued, so simultaneous arrivals can share a batch), then samples.
_HANDOFF, _STEP_END, _KICK, _TICK = 0, 1, 2, 3
_INF = math.inf


class SimInstance:
    """One simulated instance: ``sched`` (the serving core's Scheduler), ``spec`` (cost, KV
    pool, role) and the step in flight. Hooks read these; call
    :meth:`Simulation.materialize` before changing one."""

    __slots__ = (
        "idx", "spec", "sched", "executor", "cost", "busy", "step_start", "step_end",
        "batch", "run_steps", "run", "busy_acc", "acc_from", "version", "kicked",
    )

    def __init__(self, idx: int, spec: InstanceSpec, sched: Scheduler) -> None:
        self.idx = idx
        self.spec = spec
        self.sched = sched
        self.cost = spec.cost
        self.executor = CostExecutor(spec.cost)
        self.busy = False
        self.step_start = 0.0
        self.step_end = 0.0
        self.batch: ScheduledBatch | None = None
        self.run_steps = 1
        self.run: DecodeRun | None = None
        self.busy_acc = 0.0  # busy seconds of finished steps since acc_from
        self.acc_from = 0.0
        self.kicked = False
        self.version = 0  # bumps when a run is split; stale step-end events are skipped


TransferFn = Callable[[int, InstanceSpec, InstanceSpec], float]


def _kv_transfer_default(config: SimConfig, kv_bytes_per_token: float) -> TransferFn:
    graph = config.topology
    bw = config.kv_link_gbps * 1e9
    lat = config.kv_link_latency_s

    def fn(tokens: int, src: InstanceSpec, dst: InstanceSpec) -> float:
        nbytes = tokens * kv_bytes_per_token
        if graph is not None and src.gpus and dst.gpus:
            from llmplan.plan.costmodel import best_link, transfer_time

            return transfer_time(nbytes, best_link(graph, src.gpus[0], dst.gpus[0]))
        return lat + nbytes / bw

    return fn


def _kv_bytes_per_token(config: SimConfig) -> float:
    if config.kv_bytes_per_token is not None:
        return float(config.kv_bytes_per_token)
    from llmplan.models import get_model_spec

    return float(get_model_spec(config.model).kv_bytes_per_token)


class _LazyLoads(Sequence[InstanceLoad]):
    """Load snapshots built on first access: a round-robin router reads one, not all."""

    def __init__(self, sim: Simulation, insts: list[SimInstance]) -> None:
        self._sim = sim
        self._insts = insts
        self._cache: dict[int, InstanceLoad] = {}

    def __len__(self) -> int:
        return len(self._insts)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        if k < 0:
            k += len(self._insts)
        ld = self._cache.get(k)
        if ld is None:
            inst = self._insts[k]
            s = inst.sched
            used, busy = self._sim.state_at(inst, self._sim.now)
            ld = InstanceLoad(
                index=k,
                name=inst.spec.name,
                role=inst.spec.role,
                waiting=len(s.waiting),
                running=len(s.running),
                waiting_tokens=s.waiting_tokens,
                kv_blocks_used=used,
                kv_blocks_total=s.blocks.num_blocks,
                busy=busy,
                max_num_seqs=s.config.max_num_seqs,
            )
            pc = self._sim.config.prefix_cache
            if pc is not None:
                ld.cached_prefix_tokens = functools.partial(pc, inst.spec.name)
            elif s.blocks.prefix_caching and self._sim.has_token_ids:
                # Exact view of the instance's prefix cache; a workload without token ids keeps
                # the routers' own approximate view (prefix_id), as before.
                ld.cached_prefix_tokens = functools.partial(self._sim.gpu_cached_tokens, inst)
            self._cache[k] = ld
        return ld

    def __iter__(self):
        return (self[k] for k in range(len(self._insts)))


class Simulation:
    """One run. Use :func:`simulate`; this class is exposed for step-level inspection in tests."""

    def __init__(self, workload: Workload, config: SimConfig) -> None:
        from llmplan.batch import get_policy
        from llmplan.routing import get_router

        self.workload = workload
        self.config = config
        specs = build_instances(config)
        self._prefix_hashes: dict[int, list[bytes]] = {}
        self.has_token_ids = any(r.token_ids is not None for r in workload.requests)
        self.max_model_len = model_context(config)
        self.store = None
        self._store_kvb = 0.0
        if config.kv_store_gb is not None:
            from llmplan.runtime.sim.kvstore import SimKVStore

            gb, bw = config.kv_store_gb, config.kv_store_gbps
            if not (math.isfinite(gb) and gb > 0):
                raise LlmplanError(f"kv_store_gb must be a positive number of GiB (got {gb}); None: no store")
            if not (math.isfinite(bw) and bw > 0):
                raise LlmplanError(f"kv_store_gbps must be a positive bandwidth in GB/s (got {bw})")
            self._store_kvb = _kv_bytes_per_token(config)
            self.store = SimKVStore(int(gb * 2**30 // (self._store_kvb * config.block_size)))
        probe = self._store_probe if self.store is not None else None
        self.instances: list[SimInstance] = []
        for k, spec in enumerate(specs):
            policy = get_policy(config.policy, **config.policy_kwargs)
            sc = serving_config(
                num_blocks=spec.num_blocks,
                block_size=config.block_size,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                chunked_prefill=config.chunked_prefill,
                watermark=config.watermark,
                max_model_len=self.max_model_len,
                static=policy.static,
                role=spec.role,
                record_token_times=config.record_token_times,
                enable_prefix_caching=config.prefix_caching,
            )
            try:
                sched = Scheduler(sc, policy, name=spec.name, prefix_probe=probe)
            except ValueError as e:
                raise LlmplanError(str(e)) from None
            self.instances.append(SimInstance(k, spec, sched))
        self.policy = self.instances[0].sched.policy
        roles = {i.spec.role for i in self.instances}
        self.disaggregated = "prefill" in roles or "decode" in roles
        if self.disaggregated and not ({"prefill", "decode"} <= roles):
            raise LlmplanError("a disaggregated cluster needs at least one prefill and one decode instance")
        if self.disaggregated and "both" in roles:
            raise LlmplanError("colocated and prefill/decode instances cannot be mixed; pick one mode")
        self.entry = [i for i in self.instances if i.spec.role in ("both", "prefill")]
        self.decoders = [i for i in self.instances if i.spec.role == "decode"]
        self.prefillers = [i for i in self.instances if i.spec.role == "prefill"]
        self.router = get_router(config.router, **config.router_kwargs)
        self.decode_router = get_router(config.router, **config.router_kwargs)
        self.kv_transfer = None
        if self.disaggregated:
            default = _kv_transfer_default(config, _kv_bytes_per_token(config))
            self.kv_transfer = config.kv_transfer_time or default
        self.heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.now = 0.0
        self.records: list[RequestRecord] = []
        self.samples: list[InstanceSample] = []
        self.counters: dict[str, float] = {
            "kv_transfers": 0,
            "kv_transfer_bytes": 0.0,
            "kv_transfer_s": 0.0,
            "decode_runs": 0,  # runs of identical decode steps priced in closed form
            "decode_run_steps": 0,  # steps applied through such runs (the rest were stepped)
            "run_splits": 0,
            "kv_store_load_s": 0.0,
        }
        self._pending_handoffs = 0
        self._followers: dict[int, list[int]] = {}  # rid -> indices of the turns that follow it
        self._closing = False
        self._kvb = _kv_bytes_per_token(config) if self.disaggregated else 0.0
        self.energy = config.energy
        if self.energy is not None:
            self.energy.attach(self)  # clocked costs per instance; may set the decode router

    # ---------------------------------------------------------------- events
    def _push(self, t: float, kind: int, data: object) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, kind, self._seq, data))

    def _loads(self, insts: list[SimInstance]) -> _LazyLoads:
        return _LazyLoads(self, insts)

    def state_at(self, inst: SimInstance, now: float) -> tuple[int, float]:
        """(KV blocks used, busy share of the current sample window) at ``now``, as stepping
        would show them, without materialising a decode run in flight."""
        used = inst.sched.blocks.num_used
        if inst.busy and inst.run_steps > 1:
            done = inst.run.count_before(now - inst.step_start)  # steps that ended before now
            if done:
                bs = inst.sched.blocks.block_size
                # The step in progress has its slot c0 + done + 1 allocated.
                for it in inst.batch.items:  # type: ignore[union-attr]
                    extra = blocks_for(it.context_len + done + 1, bs) - len(it.seq.block_ids)
                    if extra > 0:
                        used += extra
        busy = inst.busy_acc
        if inst.busy and inst.step_start < now:
            busy += now - max(inst.step_start, inst.acc_from)
        span = now - inst.acc_from
        frac = min(1.0, busy / span) if span > 0 else (1.0 if inst.busy else 0.0)
        return used, frac

    def materialize(self, inst: SimInstance, now: float) -> None:
        """Bring an instance in the middle of a decode run to the state stepping would have at
        ``now``: the steps that ended before ``now`` are applied and the step in progress
        becomes an ordinary single step. Called before anything from outside (an arrival, a
        hand-off, a controller) touches the instance."""
        if not inst.busy or inst.run_steps == 1:
            return
        run = inst.run
        assert run is not None and inst.batch is not None
        t0 = inst.step_start
        done = run.count_before(now - t0)
        sched = inst.sched
        batch = inst.batch
        end = t0 + run.end_of(done)
        if done:
            start = t0 + run.end_of(done - 1)
            if self.energy is not None:
                self.energy.on_busy(inst, batch, t0, start, done)
            rec = [t0 + e for e in run.ends()[:done]] if self.config.record_token_times else None
            left = sched.apply_decode_run(batch, done, start, rec)
            self.counters["decode_run_steps"] += done
            assert not left, "a decode run finished a sequence before its last step"
            inst.busy_acc += max(0.0, start - max(inst.step_start, inst.acc_from))
            batch = sched.schedule(start)
        else:
            start = inst.step_start
        inst.batch = batch
        inst.run_steps = 1
        inst.run = None
        inst.step_start = start
        inst.step_end = end
        inst.version += 1
        self.counters["run_splits"] += 1
        self._push(inst.step_end, _STEP_END, (inst, inst.version))

    # ---------------------------------------------------------------- instance steps
    def _start_step(self, inst: SimInstance, now: float) -> None:
        sched = inst.sched
        batch = sched.schedule(now)
        if not batch.items:
            inst.busy = False
            inst.batch = None
            return
        if self.energy is not None:
            self.energy.before_step(inst, batch, now)  # the clock this step (or run) runs at
        steps = 1
        run = None
        if (
            self.config.fast_forward
            and not batch.num_prefill_tokens
            and not batch.padding.prefill_tokens
            and inst.spec.role != "prefill"
        ):
            kmax = sched.decode_run_limit(batch, 1 << 30)
            if kmax > 1:
                shape = batch_shape(batch)
                run = decode_run(
                    inst.cost,
                    BatchShape(decode_seqs=shape.decode_seqs, decode_ctx=shape.decode_ctx),
                    kmax,
                    sched.admission_stable_until - now,  # a clock-reading policy may reorder then
                )
                steps = run.steps
                dur = run.duration_s
        if steps == 1:
            dur = inst.executor.execute(batch).duration_s
            if self.store is not None:
                loaded = sum(it.cached_prefix for it in batch.items)
                if loaded:
                    # Promised store blocks load layer by layer behind the step's compute.
                    load_s = loaded * self._store_kvb / (self.config.kv_store_gbps * 1e9)
                    self.counters["kv_store_load_s"] += load_s
                    dur = max(dur, load_s)
        inst.busy = True
        inst.batch = batch
        inst.run_steps = steps
        inst.run = run if steps > 1 else None
        inst.step_start = now
        inst.step_end = now + dur
        inst.version += 1
        if steps > 1:
            self.counters["decode_runs"] += 1
        self._push(inst.step_end, _STEP_END, (inst, inst.version))

    def _end_step(self, inst: SimInstance, now: float) -> None:
        batch = inst.batch
        assert batch is not None
        if self.energy is not None:
            self.energy.on_busy(inst, batch, inst.step_start, now, inst.run_steps)
        inst.busy_acc += now - max(inst.step_start, inst.acc_from)
        if inst.run_steps == 1:
            if self.store is not None:
                self._store_write_back(batch)
            done = inst.sched.update(batch, StepResult(now - inst.step_start), now)
        else:
            rec = None
            if self.config.record_token_times and inst.run is not None:
                rec = [inst.step_start + e for e in inst.run.ends()]
            self.counters["decode_run_steps"] += inst.run_steps
            done = inst.sched.apply_decode_run(batch, inst.run_steps, now, rec)
        for seq in done:
            if seq.status is SeqStatus.HANDED_OFF:
                self._handoff(inst, seq, now)
            else:
                self._record(seq, inst)
        self._start_step(inst, now)

    def _handoff(self, src: SimInstance, seq: SeqState, now: float) -> None:
        loads = self._loads(self.decoders)
        dst = self.decoders[self.decode_router.route(seq.spec, loads)]
        tokens = seq.num_computed_tokens
        assert self.kv_transfer is not None
        dt = self.kv_transfer(tokens, src.spec, dst.spec)
        c = self.counters
        c["kv_transfers"] += 1
        c["kv_transfer_bytes"] += tokens * self._kvb
        c["kv_transfer_s"] += dt
        self._pending_handoffs += 1
        self._push(now + dt, _HANDOFF, (seq, src, dst))

    def _arrive_decode(self, seq: SeqState, src: SimInstance, dst: SimInstance, now: float) -> None:
        self._pending_handoffs -= 1
        # The KV is on the decode side now: the prefill instance gets its blocks back.
        src.sched.release(seq)
        if src.sched.has_work:
            self._kick(src, now)
        seq.transferred_tokens = seq.num_computed_tokens
        seq.finish_reason = None
        self.materialize(dst, now)
        if not dst.sched.add(seq, now):
            self._record(seq, dst)
            return
        self._kick(dst, now)

    # ---------------------------------------------------------------- records
    def _record(self, seq: SeqState, inst: SimInstance | None, failed: bool = False) -> None:
        spec = seq.spec
        rejected = seq.status is SeqStatus.REJECTED
        status = "failed" if failed else ("rejected" if rejected else "ok")
        self.records.append(
            RequestRecord(
                rid=spec.rid,
                arrival_s=spec.arrival_s,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=seq.num_generated,
                slo=spec.slo,
                status=status,
                reason=seq.finish_reason if status != "ok" else None,
                instance=inst.spec.name if inst is not None else None,
                first_scheduled_s=seq.first_scheduled_s,
                first_token_s=seq.first_token_s,
                finish_s=seq.finish_s,
                preemptions=seq.preemptions,
                token_times_s=seq.token_times_s,
                predicted_output_tokens=seq.predicted_output_tokens,
            )
        )
        if self._progress is not None and len(self.records) % self._progress_every == 0:
            self._progress(len(self.records), self._n)
        if self._followers:
            self._release(spec.rid, seq.finish_s)

    def _release(self, rid: int, end: float | None) -> None:
        """Send the closed-loop turns that follow request ``rid``, ended at ``end``."""
        waiting = self._followers.pop(rid, None)
        if not waiting:
            return
        t_end = self.now if end is None else max(end, self.now)
        for k in waiting:
            seq = self._seqs[k]
            if self._closing:
                seq.finish_reason = f"never sent: the turn it follows (request {rid}) never completed"
                self._record(seq, None, failed=True)
                continue
            t = t_end + seq.spec.think_s
            seq.spec = replace(seq.spec, arrival_s=t)  # the workload's own spec stays nominal
            heapq.heappush(self._arrivals, (t, seq.spec.rid, k))

    def _sample(self, now: float) -> None:
        for inst in self.instances:
            s = inst.sched
            used, busy = self.state_at(inst, now)
            self.samples.append(
                InstanceSample(
                    t_s=now,
                    instance=inst.spec.name,
                    running=len(s.running),
                    waiting=len(s.waiting),
                    kv_blocks_used=used,
                    kv_blocks_total=s.blocks.num_blocks,
                    busy_frac=busy,
                )
            )
            # The next window starts now; a step in flight counts from here on.
            inst.busy_acc = 0.0
            inst.acc_from = now
        self._next_tick = now + self.config.sample_interval_s

    # ---------------------------------------------------------------- event handlers
    # One handler per event kind (the dispatch table is built in :meth:`_loop`); each takes
    # the event's payload and its time. Arrivals come from their own heap (``_arrivals``).
    def _on_step_end(self, data: tuple[SimInstance, int], t: float) -> None:
        inst, version = data
        if version == inst.version:  # else superseded by a split run
            self._end_step(inst, t)

    def _on_handoff(self, data: tuple[SeqState, SimInstance, SimInstance], t: float) -> None:
        seq, src, dst = data
        self._arrive_decode(seq, src, dst, t)

    def _on_kick(self, inst: SimInstance, t: float) -> None:
        inst.kicked = False
        if not inst.busy:
            self._start_step(inst, t)

    def _on_tick(self, _: None, t: float) -> None:
        self._sample(t)
        for hook in self.config.tick_hooks:
            hook(self, t)
        # Idle instances with queued work stay idle until an input arrives; if none can arrive
        # any more, the run is over (leftovers are reported).
        active = any(i.busy for i in self.instances) or self._pending_handoffs
        if active:
            self._push(self._next_tick, _TICK, None)
        elif self._arrivals:
            # Nothing runs until the next arrival: the clock jumps there. The next tick is the
            # first one on the grid at or after it, and the busy window starts at the arrival
            # (the instances were idle before it), so the cost of a run follows its events,
            # not its idle time.
            ta_next = self._arrivals[0][0]
            iv = self.config.sample_interval_s
            if ta_next > self._next_tick:
                self._next_tick = t + iv * math.ceil((ta_next - t) / iv)
                for inst in self.instances:
                    inst.acc_from = ta_next
            self._push(self._next_tick, _TICK, None)
        else:
            self._next_tick = _INF

    # ---------------------------------------------------------------- main loop
    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        wall0 = time.perf_counter()
        seqs = self._prepare(progress)
        self._loop(seqs)
        self._fail_leftovers()
        return self._result(wall0, progress)

    def _prepare(self, progress: Callable[[int, int], None] | None) -> list[SeqState]:
        """Check the inputs, predict lengths when the policy asks, and set the arrival heap,
        the sampling grid and progress reporting up; returns the requests as sequences in
        arrival order."""
        cfg = self.config
        reqs = sorted(self.workload.requests, key=lambda r: (r.arrival_s, r.rid))
        self._n = n = len(reqs)
        self._closing = False
        self._progress = progress
        self._progress_every = max(1, n // 200)
        for r in reqs:
            if not (math.isfinite(r.arrival_s) and r.arrival_s >= 0):
                raise LlmplanError(
                    f"request {r.rid} has arrival time {r.arrival_s}; arrivals must be finite and >= 0"
                )
        seqs = [SeqState(spec=r) for r in reqs]
        self._predict(seqs)
        self._seqs = seqs
        self._arrivals = self._arrival_heap(reqs)
        if cfg.sample_interval_s <= 0:
            raise LlmplanError(f"sample_interval_s must be > 0 (got {cfg.sample_interval_s})")
        self._next_tick = reqs[0].arrival_s + cfg.sample_interval_s if reqs else _INF
        for inst in self.instances:
            inst.acc_from = reqs[0].arrival_s if reqs else 0.0
        if n > 0:
            self._push(self._next_tick, _TICK, None)
        return seqs

    def _arrival_heap(self, reqs: Sequence[RequestSpec]) -> list[tuple[float, int, int]]:
        """Arrivals: a heap of (time, rid, index). A closed-loop turn enters it only when the
        turn it follows has ended (see _release; ``_followers`` holds it until then); the others
        are there from the start, in order."""
        present = {r.rid for r in reqs}
        self._followers = {}
        arrivals: list[tuple[float, int, int]] = []
        for k, r in enumerate(reqs):
            if r.follows is not None and r.follows in present and r.follows != r.rid:
                if not (math.isfinite(r.think_s) and r.think_s >= 0):
                    raise LlmplanError(
                        f"request {r.rid} has think time {r.think_s}; think times must be finite and >= 0"
                    )
                self._followers.setdefault(r.follows, []).append(k)
            else:
                arrivals.append((r.arrival_s, r.rid, k))  # sorted, hence a heap
        return arrivals

    def _loop(self, seqs: list[SeqState]) -> None:
        """Handle events in time order until none is left: the next arrival goes before heap
        events at the same instant; heap events go by (time, kind, push order) to their
        handler."""
        handlers: dict[int, Callable[[Any, float], None]] = {
            _HANDOFF: self._on_handoff,
            _STEP_END: self._on_step_end,
            _KICK: self._on_kick,
            _TICK: self._on_tick,
        }
        heap = self.heap
        arrivals = self._arrivals  # closed-loop turns join it as the turns they follow end
        while True:
            ta = arrivals[0][0] if arrivals else _INF
            if heap and heap[0][0] < ta:
                t, kind, _, data = heapq.heappop(heap)
                self.now = t
                handlers[kind](data, t)
                continue
            if not arrivals:
                if not heap:
                    break
                continue
            seq = seqs[heapq.heappop(arrivals)[2]]
            self.now = ta
            self._arrive(seq, ta)

    def _fail_leftovers(self) -> None:
        # Safety net: a request still queued when every instance went idle could never be
        # admitted (a policy that keeps refusing it); report it rather than drop it (and the
        # closed-loop turns waiting for it, which were never sent).
        self._closing = True
        for inst in self.instances:
            for seq in list(inst.sched.waiting) + list(inst.sched.running):
                seq.finish_reason = f"never completed: {inst.spec.name} stopped with it {seq.status.value}"
                self._record(seq, inst, failed=True)

    def _result(self, wall0: float, progress: Callable[[int, int], None] | None) -> RunResult:
        cfg = self.config
        counters = self._counters()
        wall = time.perf_counter() - wall0
        self.records.sort(key=lambda r: r.rid)
        if progress is not None:
            progress(len(self.records), self._n)
        meta = {
            "config": cfg.to_dict(),
            "policy": self.policy.name,
            "router": self.router.name,
            "instances": [
                {"name": i.spec.name, "role": i.spec.role, "num_blocks": i.spec.num_blocks,
                 "block_size": cfg.block_size, "cost": type(i.cost).__name__}
                for i in self.instances
            ],
            "predictor": getattr(self._predictor, "name", None),
            "wall_s": wall,
            "sim_end_s": self.now,
            "workload": self.workload.name,
        }
        if self.energy is not None:
            meta["energy"] = en = self.energy.summary(self, self.records)
            for k in ("energy_j", "busy_energy_j", "idle_energy_j", "prefill_energy_j", "decode_energy_j"):
                counters[k] = en[k]
        return RunResult(records=self.records, samples=self.samples, counters=counters, meta=meta)

    def _predict(self, seqs: list[SeqState]) -> None:
        from llmplan.predict.oracle import parse_predictor

        self._predictor = None
        if not (self.policy.uses_prediction or self.policy.reserve == "predicted"):
            return
        pred = parse_predictor(self.config.predictor, seed=self.config.seed)
        if pred is None:
            raise LlmplanError(
                f"policy {self.policy.name!r} orders by predicted length; set predictor to oracle, "
                "noisy:<accuracy> or a trained LengthPredictor"
            )
        self._predictor = pred
        if not seqs:
            return
        try:
            out = pred.predict([s.spec for s in seqs])
        except ValueError as exc:  # e.g. a learned predictor given a request without prompt text
            raise LlmplanError(f"predictor {pred.name}: {exc}") from None
        apply_prediction(seqs, out)

    def _arrive(self, seq: SeqState, now: float) -> None:
        # The server's rules (llmplan.runtime.core.limits): prompt + max_tokens must fit the
        # context, which is the model's (or max_model_len) capped by the instance's KV pool.
        # The load generator asks for exactly the trace's output tokens, so does this check.
        spec = seq.spec
        entry = self.entry
        fits, reason = placement(
            spec.prompt_tokens,
            spec.output_tokens,
            [(i.sched.config.max_model_len, i.spec.role == "prefill") for i in entry],
            [d.sched.config.max_model_len for d in self.decoders],
        )
        if reason is not None:
            reject(seq, reason, now)
            self._record(seq, None)
            return
        if len(fits) == 1:
            inst = entry[fits[0]]
        else:
            inst = entry[fits[self.router.route(spec, self._loads([entry[k] for k in fits]))]]
        self.materialize(inst, now)
        if not inst.sched.add(seq, now):
            self._record(seq, inst)
            return
        self._kick(inst, now)

    def _kick(self, inst: SimInstance, now: float) -> None:
        if not inst.busy and not inst.kicked:
            inst.kicked = True
            self._push(now, _KICK, inst)

    def _hashes(self, spec: Any) -> list[bytes] | None:
        """Chained block hashes of ``spec``'s prompt (memoised for the last 4,096 requests)."""
        ids = getattr(spec, "token_ids", None)
        if ids is None:
            return None
        memo = self._prefix_hashes
        h = memo.get(spec.rid)
        if h is None:
            from llmplan.runtime.core.blocks import chain_hashes

            h = memo[spec.rid] = chain_hashes(np.asarray(ids, dtype=np.uint32), self.config.block_size)
            if len(memo) > 4096:
                memo.pop(next(iter(memo)))
        return h

    def _store_probe(self, seq: SeqState) -> int:
        """The scheduler's prefix probe: prompt tokens the global store holds (its leading blocks)."""
        assert self.store is not None
        h = self._hashes(seq.spec)
        return 0 if not h else self.store.match(h) * self.config.block_size

    def _store_write_back(self, batch: ScheduledBatch) -> None:
        """Put every full prompt block a prefill step computes into the store."""
        assert self.store is not None
        bs = self.config.block_size
        for it in batch.items:
            if not it.is_prefill:
                continue
            h = self._hashes(it.seq.spec)
            if not h:
                continue
            first = -(-it.context_len // bs)  # blocks before this one came from a cache
            last = min((it.context_len + it.num_new_tokens) // bs, len(h))
            if last > first:
                self.store.put(h[first:last])

    def gpu_cached_tokens(self, inst: SimInstance, spec: Any) -> int:
        """Prompt tokens of ``spec`` whose blocks ``inst``'s prefix cache holds now (for routers)."""
        h = self._hashes(spec)
        return 0 if h is None else inst.sched.blocks.cached_prefix_blocks(h) * self.config.block_size

    def _counters(self) -> dict[str, float]:
        out = dict(self.counters)
        for k, attr in (("prefix_cache_hit_tokens", "hit_tokens"),
                        ("prefix_cache_query_tokens", "query_tokens"),
                        ("prefix_cache_evictions", "evictions")):  # fmt: skip
            out[k] = sum(getattr(i.sched.blocks, attr) for i in self.instances)
        if self.store is not None:
            st = self.store
            out["kv_store_hit_tokens"] = sum(i.sched.stats.cached_prefix_tokens for i in self.instances)
            out["kv_store_put_blocks"] = st.put_blocks
            out["kv_store_evictions"] = st.evictions
            out["kv_store_blocks"] = len(st)
            out["kv_store_capacity_blocks"] = st.capacity_blocks
        else:
            out.pop("kv_store_load_s", None)
        keys = ("preemptions", "misprediction_preemptions", "mispredictions", "padding_tokens",
                "prompt_padding_tokens", "decode_padding_tokens", "steps", "prefill_tokens",
                "recompute_tokens", "decode_tokens", "rejected", "handoffs")
        for k in keys:
            out[k] = sum(getattr(i.sched.stats, k) for i in self.instances)
        out["requests"] = len(self.records)
        out["completed"] = sum(1 for r in self.records if r.status == "ok")
        out["rejected"] = sum(1 for r in self.records if r.status == "rejected")
        out["failed"] = sum(1 for r in self.records if r.status == "failed")
        return out


def simulate(
    workload: Workload,
    config: SimConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RunResult:
    """Simulate ``workload`` on the cluster ``config`` describes; one record per request.

    ``progress(done, total)`` is called as requests complete (for a progress bar).
    """
    return Simulation(workload, config or SimConfig()).run(progress)
