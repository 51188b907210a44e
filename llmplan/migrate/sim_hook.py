"""The migration controller inside the simulator: a ``SimConfig.tick_hooks`` entry.

At every sample tick the hook measures each instance as the controller expects it
(:class:`WorkerLoad`: compute = busy share of the last window times the running step's tokens
over the GPU's ridge point, KV bytes in use over KV capacity, the
instance's first GPU as its topology node), calls the *same* :class:`MigrationController` the
engine uses, and applies each decision to the simulated instances.

What a migration does to the simulation is a first-order, work-conserving model, stated here
so nobody mistakes it for more. Moving a share ``f`` of instance A's attention (KV heads/blocks
and the attention over them) to instance B:

* A's iterations read ``f`` less KV: the attention terms of its batch shape (``decode_ctx``,
  ``prefill_attn``) are scaled by ``1 - f`` before the roofline prices them;
* B absorbs that work: with ``a`` the share of A's step time spent in attention (priced from
  A's current batch) and ``b`` A's busy share, B spends ``f * a * b`` of its wall time on A's
  attention, so B's iterations take ``1 / (1 - f * a * b)`` as long.

Memory is not moved in the model (A's KV capacity stays), which understates the benefit; the
link time ``T = S/B + T_sync`` is charged once to both instances as a stall. Layer migration
does not apply between separate instances, so only attention decisions are applied here.
With ``apply=False`` the hook only logs the controller's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmplan.migrate.controller import MigrationController, WorkerLoad
from llmplan.plan.costmodel import BatchShape, IterationCost


@dataclass(slots=True)
class MigratedCost:
    """``base`` after attention migrations: attention terms kept at ``keep``, every iteration
    ``factor`` times as long (absorbed work), and a one-off ``stall_s`` (the migration)."""

    base: IterationCost
    keep: float = 1.0
    factor: float = 1.0
    stall_s: float = 0.0

    def iteration_time(self, shape: BatchShape) -> float:
        if self.keep != 1.0:
            shape = BatchShape(shape.prefill_tokens, shape.prefill_attn * self.keep, shape.decode_seqs,
                               int(shape.decode_ctx * self.keep))
        t = self.base.iteration_time(shape) * self.factor
        if self.stall_s and t > 0:
            t, self.stall_s = t + self.stall_s, 0.0
        return t


def attention_share(cost: IterationCost, shape: BatchShape) -> float:
    """Share of an iteration of ``shape`` that the attention terms account for."""
    full = cost.iteration_time(shape)
    if full <= 0:
        return 0.0
    bare = cost.iteration_time(BatchShape(shape.prefill_tokens, 0.0, shape.decode_seqs, 0))
    return max(0.0, min(1.0, 1.0 - bare / full))


@dataclass(slots=True)
class ControllerHook:
    controller: MigrationController
    kv_bytes_per_token: float
    block_size: int = 16
    apply: bool = True
    min_keep: float = 0.2
    max_factor: float = 4.0
    # Tokens per step at which the GPU turns compute-bound (peak FLOP/s / memory bytes/s:
    # ~153 for an A100 at bf16); fewer tokens use that share of its compute.
    saturating_tokens: int = 153
    applied: list[Any] = field(default_factory=list)
    __name__: str = "banaserve-controller"

    def loads(self, sim, now: float) -> list[WorkerLoad]:
        out = []
        for inst in sim.instances:
            used, busy = sim.state_at(inst, now)
            total = inst.sched.blocks.num_blocks
            per_block = self.kv_bytes_per_token * self.block_size
            out.append(WorkerLoad(
                name=inst.spec.name, compute=busy, memory_bytes=used * per_block,
                memory_max=max(total, 1) * per_block, instance=inst.spec.name,
                node=inst.spec.gpus[0] if inst.spec.gpus else None,
            ))
        return out

    def __call__(self, sim, now: float) -> None:
        # Samples reset the busy window just before hooks run, so read the last sample row of
        # each instance instead of the (now empty) window.
        last = {s.instance: s for s in sim.samples[-len(sim.instances):]}
        loads = []
        for inst, w in zip(sim.instances, self.loads(sim, now), strict=True):
            s = last.get(w.name)
            busy = s.busy_frac if s is not None else w.compute
            # Busy time is not compute use: a decode step of a few tokens keeps the GPU busy
            # streaming weights while its ALUs idle. Scale by the step's tokens over the ridge.
            b = inst.batch
            tokens = (b.num_prefill_tokens + b.num_decode) if b is not None else 0
            busy *= min(1.0, tokens / self.saturating_tokens)
            loads.append(WorkerLoad(w.name, busy, w.memory_bytes, w.memory_max, instance=w.instance,
                                    node=w.node))
        decisions = self.controller.step(now, loads)
        if not self.apply:
            return
        from llmplan.runtime.sim.pricing import CostExecutor, batch_shape

        by_name = {i.spec.name: i for i in sim.instances}
        busy = {w.name: w.compute for w in loads}
        for d in decisions:
            src, dst = by_name[d.src], by_name[d.dst]
            if d.kind != "attention" or src.batch is None:
                continue
            for inst in (src, dst):
                sim.materialize(inst, now)
                if not isinstance(inst.cost, MigratedCost):
                    inst.cost = MigratedCost(inst.cost)
                    inst.executor = CostExecutor(inst.cost)
            a = attention_share(src.cost, batch_shape(src.batch)) if src.batch is not None else 0.0
            f = d.kv_fraction
            absorbed = min(0.9, f * a * busy[d.src])
            src.cost.keep = max(self.min_keep, src.cost.keep * (1 - f))
            dst.cost.factor = min(self.max_factor, dst.cost.factor / (1 - absorbed))
            src.cost.stall_s += d.est_time_s
            dst.cost.stall_s += d.est_time_s
            self.controller.record_result(d, d.est_time_s)
            self.applied.append((now, d.src, d.dst, f, a, src.cost.keep, dst.cost.factor))
