"""GreenServe's policies as plain objects, and the simulator's energy accounting.

* :class:`EcoPred` -- iteration-time predictor over (batch shape, KV tokens, SM clock): recursive
  least squares on clock-scaled features, one model for steps with prefill and one for pure decode,
  warm-started from the cost model (the "profile") and updated online from every measured step.
* :class:`EcoFreq` -- before each iteration, the lowest clock on the ladder whose predicted time
  meets the batch's TTFT/ITL budgets (never below the step's energy-optimal clock: lower would cost
  more joules *and* time); the maximum when a budget is tight.
* :class:`EcoRoute` -- a router for decode instances: what-if the request joined each one, in
  (batch, KV) space: the clock it would then need, the power that draws (an idle instance goes from
  idle to busy power) and whether it crosses a staircase step; picks the smallest power rise among
  the instances that keep KV headroom and can meet the TPOT.
* :class:`EnergyControl` -- what :class:`~llmplan.runtime.sim.simulator.Simulation` calls
  (``SimConfig.energy``): wraps each instance's cost in a :class:`~llmplan.energy.power.ClockedCost`,
  asks EcoFreq for a clock before each step (``mode="greenserve"``) or keeps ``f_max``
  (``mode="max"``: the baseline), and accounts joules per step, per phase and idle.

On a real GPU the clock would be applied with :meth:`llmplan.energy.measure.NvmlReader.set_locked_clocks`
(refusals reported, not hidden); the serving engine does not call EcoFreq yet.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmplan.energy.power import ClockedCost, ClockPower
from llmplan.plan.costmodel import BatchShape
from llmplan.routing.base import InstanceLoad
from llmplan.workload.types import RequestSpec


def _features(shape: BatchShape, r: float, tile: int) -> np.ndarray:
    t = shape.prefill_tokens + shape.decode_seqs
    inv = 1.0 / r
    tiles = math.ceil(t / tile) * tile if t else 0
    k = 1e-3
    return np.array([
        1.0, inv, k * t, k * tiles * inv, k * shape.decode_ctx, k * shape.decode_ctx * inv,
        k * k * shape.prefill_attn, k * k * shape.prefill_attn * inv,
    ])


@dataclass(slots=True)
class _Rls:
    dim: int
    lam: float = 0.999  # forgetting: recent steps weigh a little more
    w: np.ndarray = field(init=False)
    p: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.w = np.zeros(self.dim)
        self.p = np.eye(self.dim) * 1e3

    def update(self, x: np.ndarray, y: float) -> None:
        px = self.p @ x
        g = px / (self.lam + x @ px)
        self.w = self.w + g * (y - x @ self.w)
        self.p = (self.p - np.outer(g, px)) / self.lam


@dataclass(slots=True)
class EcoPred:
    """Iteration seconds from (shape, MHz): two RLS models, online."""

    power: ClockPower
    models: dict[str, _Rls] = field(default_factory=dict)
    updates: int = 0

    def _m(self, shape: BatchShape) -> _Rls:
        key = "prefill" if shape.prefill_tokens else "decode"
        m = self.models.get(key)
        if m is None:
            m = self.models[key] = _Rls(8)
        return m

    def predict(self, shape: BatchShape, mhz: float) -> float:
        x = _features(shape, mhz / self.power.f_max_mhz, self.power.tile_tokens)
        return max(0.0, float(x @ self._m(shape).w))

    def update(self, shape: BatchShape, mhz: float, seconds: float) -> None:
        x = _features(shape, mhz / self.power.f_max_mhz, self.power.tile_tokens)
        self._m(shape).update(x, seconds)
        self.updates += 1

    @classmethod
    def profiled(cls, cost: ClockedCost, seed: int = 0, samples: int = 600) -> EcoPred:
        """Warm start from ``samples`` steps of the cost model at random shapes and ladder clocks
        (what an offline profiling sweep would record)."""
        rng = np.random.default_rng(seed)
        ladder = cost.power.ladder(8)
        pred = cls(cost.power)
        for _ in range(samples):
            f = float(rng.choice(ladder))
            if rng.random() < 0.5:
                n = int(rng.integers(1, 8))
                p = int(rng.integers(16, 4096))
                shape = BatchShape(prefill_tokens=n * p, prefill_attn=n * p * (p + 1) / 2,
                                   decode_seqs=int(rng.integers(0, 64)) * int(rng.random() < 0.3),
                                   decode_ctx=0)
                if shape.decode_seqs:
                    shape = BatchShape(shape.prefill_tokens, shape.prefill_attn, shape.decode_seqs,
                                       shape.decode_seqs * int(rng.integers(100, 3000)))
            else:
                b = int(rng.integers(1, 320))
                shape = BatchShape(decode_seqs=b, decode_ctx=b * int(rng.integers(50, 4000)))
            pred.update(shape, f, cost.evaluate(shape, f).time_s)
        return pred


@dataclass(slots=True)
class EcoFreq:
    """Per-iteration clock choice under SLO slack."""

    power: ClockPower
    pred: EcoPred
    margin: float = 0.85  # use this share of a budget (the predictor errs; decode runs grow)
    # Load guard: an instance busy a share rho of recent time (at f_max) becomes busy
    # rho * t(f) / t(f_max) at clock f; queueing delay grows as 1 / (1 - rho), so no clock may push
    # it past rho_cap (arrivals during a slow step are deadlines the budget cannot see).
    rho_cap: float = 0.8
    levels: int = 12
    queue_lookahead: int = 32
    ladder: tuple[float, ...] = ()
    decisions: dict[str, int] = field(default_factory=lambda: {"max_tight": 0, "lowered": 0, "max": 0})

    def __post_init__(self) -> None:
        if not self.ladder:
            self.ladder = self.power.ladder(self.levels)

    def budget_s(self, batch: Any, waiting: Sequence[Any], now: float) -> float:
        """Seconds this step may take and still meet every deadline it touches."""
        b = math.inf
        for it in batch.items:
            seq = it.seq
            slo = seq.spec.slo
            if it.is_prefill:
                if slo.ttft_s is not None and seq.first_token_s is None:
                    b = min(b, seq.spec.arrival_s + slo.ttft_s - now)
            elif slo.tpot_s is not None:
                # After this step the request has num_generated + 1 tokens; TPOT averages the
                # num_generated gaps after the first token. Never spend more than one TPOT per step.
                first = seq.first_token_s if seq.first_token_s is not None else now
                b = min(b, first + slo.tpot_s * max(1, seq.num_generated) - now, slo.tpot_s)
        # Queued requests wait for this step, then for the prefills ahead of them (at f_max).
        ahead = 0.0
        fmax = self.power.f_max_mhz
        for seq in list(waiting)[: self.queue_lookahead]:
            p = seq.spec.prompt_tokens
            own = self.pred.predict(BatchShape(prefill_tokens=p, prefill_attn=p * (p + 1) / 2), fmax)
            ahead += own
            if seq.spec.slo.ttft_s is not None:
                b = min(b, seq.spec.arrival_s + seq.spec.slo.ttft_s - now - ahead)
        return b

    def choose(self, cost: ClockedCost, shape: BatchShape, budget_s: float, rho: float = 0.0) -> float:
        fmax = self.power.f_max_mhz
        t_max = self.pred.predict(shape, fmax)
        if rho >= self.rho_cap:
            self.decisions["max_tight"] += 1
            return fmax
        if budget_s <= t_max / self.margin:
            self.decisions["max_tight"] += 1
            return fmax
        # Lowest-energy clock for this step (U-shape): never go below it.
        e_best, f_floor = math.inf, fmax
        for f in self.ladder:
            e = cost.evaluate(shape, f).energy_j
            if e < e_best:
                e_best, f_floor = e, f
        for f in self.ladder:
            if f < f_floor:
                continue
            t = self.pred.predict(shape, f)
            if t <= self.margin * budget_s and (rho <= 0 or t_max <= 0 or rho * t / t_max <= self.rho_cap):
                self.decisions["lowered" if f < fmax else "max"] += 1
                return f
        self.decisions["max"] += 1
        return fmax


@dataclass(slots=True)
class EcoRoute:
    """What-if router over decode instances in (batch, KV) space. ``costs[name]`` is each decode
    instance's :class:`ClockedCost`; ``freq`` its clock policy."""

    costs: dict[str, ClockedCost]
    freq: EcoFreq
    block_size: int = 16
    max_kv_usage: float = 0.92
    fixed_clock: bool = False  # the instances stay at f_max (no EcoFreq): what-ifs at f_max
    name: str = "ecoroute"
    stats: dict[str, int] = field(
        default_factory=lambda: {"routed": 0, "avoided_step": 0, "avoided_clock": 0}
    )

    def _need(
        self, cost: ClockedCost, shape: BatchShape | None, tpot: float | None
    ) -> tuple[float, float, bool]:
        """(clock it needs, power at that clock in W, whether even f_max misses the TPOT)."""
        if shape is None:
            return 0.0, cost.idle_power_w(), False
        fmax = cost.power.f_max_mhz
        budget = tpot if tpot is not None else math.inf
        f = fmax if self.fixed_clock else self.freq.choose(cost, shape, budget)
        miss = tpot is not None and self.freq.pred.predict(shape, fmax) > tpot
        return f, cost.evaluate(shape, f).power_w, miss

    def route(self, spec: RequestSpec, loads: Sequence[InstanceLoad]) -> int:
        """The instance whose power rises least if the request joins it (an idle one rises from
        idle to busy power, a busy one by its higher batch and any higher clock it then needs),
        among those that keep KV headroom and can still meet the TPOT; ties: no staircase step,
        lower KV use, shorter queue."""
        tpot = spec.slo.tpot_s
        ctx_new = spec.prompt_tokens + 1
        best: tuple[tuple, int] | None = None
        saved = dict(self.freq.decisions)
        cands = []
        for ld in loads:
            cost = self.costs[ld.name]
            b = ld.running + ld.waiting
            ctx = ld.kv_blocks_used * self.block_size
            now = BatchShape(decode_seqs=b, decode_ctx=ctx) if b else None
            after = BatchShape(decode_seqs=b + 1, decode_ctx=ctx + ctx_new)
            f0, p0, _ = self._need(cost, now, tpot)
            f1, p1, miss = self._need(cost, after, tpot)
            step = b > 0 and b % cost.power.tile_tokens == 0
            full = bool(ld.kv_blocks_total) and (
                ld.kv_blocks_used + math.ceil(ctx_new / self.block_size)
            ) / ld.kv_blocks_total > self.max_kv_usage
            higher = b > 0 and f1 > f0
            key = (full, miss, round(p1 - p0, 1), step, ld.kv_usage, ld.queue_len)
            cands.append((ld.index, higher, step))
            if best is None or key < best[0]:
                best = (key, ld.index)
        self.freq.decisions.update(saved)  # what-ifs are not decisions
        assert best is not None
        self.stats["routed"] += 1
        chosen = next(c for c in cands if c[0] == best[1])
        if any(c[2] for c in cands) and not chosen[2]:
            self.stats["avoided_step"] += 1
        if any(c[1] for c in cands) and not chosen[1]:
            self.stats["avoided_clock"] += 1
        return best[1]


def _shape_of(batch: Any) -> BatchShape:
    from llmplan.runtime.sim.pricing import batch_shape

    return batch_shape(batch)


@dataclass(slots=True)
class EnergyControl:
    """The simulator's energy hook (``SimConfig.energy``). ``mode``: ``"max"`` (every step at
    ``f_max``: the baseline, joules only) or ``"greenserve"`` (EcoFreq clocks, EcoRoute for
    decode instances when ``route`` and the cluster is P/D)."""

    mode: str = "greenserve"
    fixed_mhz: float = 0.0  # mode "fixed": every step at this locked clock
    route: bool = True
    freq: bool = True  # False: keep f_max (EcoRoute alone, for ablations)
    margin: float = 0.85
    rho_cap: float = 0.8
    load_window_s: float = 10.0
    levels: int = 12
    seed: int = 0
    # filled by attach()
    costs: dict[str, ClockedCost] = field(default_factory=dict)
    preds: dict[str, EcoPred] = field(default_factory=dict)
    freqs: dict[str, EcoFreq] = field(default_factory=dict)
    router: EcoRoute | None = None
    joules: dict[str, float] = field(default_factory=dict)  # busy joules per instance
    busy_s: dict[str, float] = field(default_factory=dict)
    phase_j: dict[str, float] = field(default_factory=lambda: {"prefill": 0.0, "decode": 0.0})
    clock_time: dict[float, float] = field(default_factory=dict)  # seconds spent at each clock
    clock_acc: dict[str, float] = field(default_factory=dict)  # name -> sum of MHz * busy s
    pred_err: list[float] = field(default_factory=list)
    recent: dict[str, Any] = field(default_factory=dict)  # name -> deque of (end, busy s at f_max)

    def __post_init__(self) -> None:
        if self.mode not in ("max", "greenserve", "fixed"):
            from llmplan.errors import LlmplanError

            raise LlmplanError(f"energy mode {self.mode!r}: choose max (baseline), fixed or greenserve")

    def attach(self, sim: Any) -> None:
        from llmplan.runtime.sim.pricing import CostExecutor

        shared: dict[int, ClockedCost] = {}
        for inst in sim.instances:
            base = inst.spec.cost
            cc = shared.get(id(base))
            cc = ClockedCost.wrap(base) if cc is None else cc
            shared[id(base)] = cc
            cc = cc.at(0.0)  # own clock per instance, own cache
            inst.cost = cc
            inst.executor = CostExecutor(cc)
            name = inst.spec.name
            self.costs[name] = cc
            self.joules[name] = 0.0
            self.busy_s[name] = 0.0
            if self.mode == "greenserve":
                pred = EcoPred.profiled(cc, seed=self.seed)
                self.preds[name] = pred
                self.freqs[name] = EcoFreq(cc.power, pred, margin=self.margin, rho_cap=self.rho_cap,
                                           levels=self.levels)
                self.recent[name] = deque()
        if self.mode == "greenserve" and self.route and sim.decoders:
            d = sim.decoders[0]
            self.router = EcoRoute(
                {i.spec.name: self.costs[i.spec.name] for i in sim.decoders},
                self.freqs[d.spec.name], block_size=sim.config.block_size, fixed_clock=not self.freq,
            )
            sim.decode_router = self.router

    def before_step(self, inst: Any, batch: Any, now: float) -> None:
        if self.mode == "fixed":
            cc = self.costs[inst.spec.name]
            cc.mhz = min(cc.power.f_max_mhz, max(cc.power.f_min_mhz, self.fixed_mhz))
            return
        if self.mode != "greenserve" or not self.freq:
            return
        cc = self.costs[inst.spec.name]
        fq = self.freqs[inst.spec.name]
        shape = _shape_of(batch)
        budget = fq.budget_s(batch, inst.sched.waiting, now)
        # A decode instance is busy whenever it holds sequences, and a newcomer joins the next
        # step rather than queueing behind it: the load guard is for instances that prefill.
        rho = 0.0 if inst.spec.role == "decode" else self.load(inst.spec.name, now)
        cc.mhz = fq.choose(cc, shape, budget, rho)

    def load(self, name: str, now: float) -> float:
        """Busy share of the last ``load_window_s`` seconds, counted at f_max."""
        dq = self.recent.get(name)
        if not dq:
            return 0.0
        lo = now - self.load_window_s
        while dq and dq[0][0] < lo:
            dq.popleft()
        return sum(b for _, b in dq) / self.load_window_s

    def on_busy(self, inst: Any, batch: Any, t0: float, t1: float, steps: int) -> None:
        """Account the busy interval [t0, t1] of ``steps`` steps of ``batch`` at the current clock."""
        dt = t1 - t0
        if dt <= 0 or batch is None:
            return
        name = inst.spec.name
        cc = self.costs[name]
        shape = _shape_of(batch)
        at_max = cc.f_mhz >= cc.power.f_max_mhz
        # A stepped iteration at f_max took exactly the base model's time: no need to price it again.
        ev = cc.evaluate(shape, base_t=dt if at_max and steps == 1 and t0 == inst.step_start else None)
        p = ev.power_w if ev.time_s > 0 else cc.idle_power_w()
        j = p * dt
        self.joules[name] += j
        self.busy_s[name] += dt
        f = cc.f_mhz
        self.clock_time[f] = self.clock_time.get(f, 0.0) + dt
        self.clock_acc[name] = self.clock_acc.get(name, 0.0) + f * dt
        tok = shape.prefill_tokens + shape.decode_seqs
        pre = shape.prefill_tokens / tok if tok else 0.0
        self.phase_j["prefill"] += j * pre
        self.phase_j["decode"] += j * (1 - pre)
        dq = self.recent.get(name)
        if dq is not None:
            t_max = ev.time_s if at_max else cc.evaluate(shape, cc.power.f_max_mhz).time_s
            dq.append((t1, dt * (t_max / ev.time_s if ev.time_s > 0 else 1.0)))
        pred = self.preds.get(name)
        if pred is not None and steps == 1:
            est = pred.predict(shape, f)
            if dt > 0:
                self.pred_err.append(abs(est - dt) / dt)
            pred.update(shape, f, dt)

    def summary(self, sim: Any, records: Sequence[Any]) -> dict[str, Any]:
        """Joules for the run: busy per instance, idle (GPUs powered but not stepping from the
        first arrival to the end), per request and per output token of completed requests."""
        start = min((r.arrival_s for r in records), default=0.0)
        span = max(0.0, sim.now - start)
        idle_j = 0.0
        for inst in sim.instances:
            name = inst.spec.name
            idle_j += self.costs[name].idle_power_w() * max(0.0, span - self.busy_s[name])
        busy_j = sum(self.joules.values())
        total = busy_j + idle_j
        ok = [r for r in records if r.status == "ok"]
        out_tok = sum(r.output_tokens for r in ok)
        gpus = sum(self.costs[i.spec.name].gpus for i in sim.instances)
        busy_t = sum(self.clock_time.values())
        return {
            "mode": self.mode,
            "modelled": True,  # no measurement in the simulator
            "energy_j": total,
            "busy_energy_j": busy_j,
            "idle_energy_j": idle_j,
            "prefill_energy_j": self.phase_j["prefill"],
            "decode_energy_j": self.phase_j["decode"],
            "energy_per_request_j": total / len(ok) if ok else None,
            "energy_per_output_token_j": total / out_tok if out_tok else None,
            "avg_power_w": total / span if span > 0 else 0.0,
            "gpus": gpus,
            "span_s": span,
            "mean_clock_mhz": sum(f * t for f, t in self.clock_time.items()) / busy_t if busy_t else None,
            "by_instance_j": dict(self.joules),
            "mean_clock_by_instance_mhz": {
                k: self.clock_acc[k] / self.busy_s[k] for k in self.clock_acc if self.busy_s[k] > 0
            },
            "ecopred_mape": float(np.mean(self.pred_err)) if self.pred_err else None,
            "ecofreq": {k: dict(v.decisions) for k, v in self.freqs.items()} if self.freqs else None,
            "ecoroute": dict(self.router.stats) if self.router is not None else None,
        }
