"""The migration controller, the thesis's Algorithm 4-1, as a plain object.

Every ``period_s`` the caller (the engine's control loop, or the simulator on its virtual
clock) hands in one :class:`WorkerLoad` per worker and gets back a list of
:class:`Decision`\\ s; executing them is the caller's job, and it reports the measured time back
with :meth:`MigrationController.record_result`. One step:

1. Load per worker ``L = C/C_max + M/M_max`` (the routers' formula), smoothed by an EWMA so one
   noisy sample does not trigger a migration.
2. Overloaded / underloaded sets against the mean ``L_bar`` with **hysteresis**: a worker
   enters the overloaded set above ``L_bar + delta_up`` and leaves it only below
   ``L_bar + delta_down`` (``delta_down < delta_up``); mirrored for the underloaded set. A load
   hovering at the threshold therefore cannot flip the sets every period.
3. Pair the most overloaded with the least underloaded worker and pick the kind:
   **layer migration** (move boundary layers -- weights and their KV -- between adjacent
   pipeline stages of one instance) when the overload is compute-dominated and the two are
   neighbours; else **attention migration** (offload a share of KV heads/blocks and the
   attention over them, see :mod:`llmplan.migrate.attention_split`), which needs no adjacency
   and relieves memory too.
4. Size the move to close half the gap (a full close overshoots under noise) and never so far
   that the pair's imbalance would not shrink -- moving a layer from 17/16 to 16/17 is a
   ping-pong, not a fix.
5. Cost ``T = S/B + T_sync`` (``S`` bytes moved, ``B`` the link's bandwidth from the topology
   graph, ``bandwidth_gbps`` in GB/s) against the benefit ``dL * horizon`` (bottleneck time
   saved while the imbalance lasts); migrate when ``rho = benefit / T >= rho_min``.
6. Cool-down per worker, and no reverse move on a pair within ``reverse_lockout_s``.
7. **Calibration**: every executed move's measured time is reported back; the controller keeps
   an EWMA of measured / modelled time per kind and prices the next move of that kind at
   ``T x ratio``. The model misses costs a real engine pays (allocating and filling the
   destination's pools, serialising, a barrier held by a running step): on the CPU engine moves
   took 5-25x ``S/B + T_sync``. ``est_time_s`` stays the model's figure, logged beside the
   measurement; ``expected_time_s`` is the calibrated one that ``rho`` uses.

Every decision, including each skip, is a :class:`Decision` with its reason; ``counters``
(monotonic, Prometheus-friendly names) count them for ``/metrics``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from llmplan.errors import LlmplanError

log = logging.getLogger(__name__)

Kind = Literal["layer", "attention", "skip"]


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker's measurement. ``layers`` is ``[start, end)`` for a pipeline-stage worker."""

    name: str
    compute: float  # C: busy share over the period, or FLOP/s in use (with compute_max to match)
    memory_bytes: float  # M: KV bytes in use
    memory_max: float  # M_max: KV bytes the worker can hold
    compute_max: float = 1.0
    instance: str = ""
    layers: tuple[int, int] | None = None
    layer_weight_bytes: float = 0.0  # one decoder layer's weights
    node: str | None = None  # topology node (e.g. "GPU3") for the bandwidth lookup
    # KV bytes in use, when memory_bytes also counts weights (a live worker): what a move carries
    # besides the layers' weights. None: memory_bytes is all KV (the simulator's instances).
    kv_bytes: float | None = None
    # The worker's rank in its multi-worker instance (the id the executor moves layers by; ``name``
    # is then only its label). None: a simulated instance, known by its name alone.
    rank: int | None = None

    @property
    def movable_kv_bytes(self) -> float:
        return self.memory_bytes if self.kv_bytes is None else self.kv_bytes

    @property
    def compute_share(self) -> float:
        return self.compute / self.compute_max if self.compute_max > 0 else 0.0

    @property
    def memory_share(self) -> float:
        return self.memory_bytes / self.memory_max if self.memory_max > 0 else 0.0

    @property
    def load(self) -> float:
        return self.compute_share + self.memory_share

    @property
    def num_layers(self) -> int:
        return 0 if self.layers is None else self.layers[1] - self.layers[0]


@dataclass(slots=True)
class Decision:
    t: float
    kind: Kind
    src: str
    dst: str
    reason: str
    code: str = "migrate"  # short machine-readable reason: migrate | cooldown | no_target | ...
    layers: tuple[int, ...] = ()  # global indices of the layers to move (layer migration)
    kv_fraction: float = 0.0  # share of src's attention work / KV to offload (attention migration)
    bytes: float = 0.0
    est_time_s: float = 0.0  # the model: S/B + T_sync
    expected_time_s: float = 0.0  # est_time_s x this kind's measured/modelled ratio so far (rho uses it)
    benefit_s: float = 0.0
    rho: float = 0.0
    load_src: float = 0.0
    load_dst: float = 0.0
    measured_time_s: float | None = None  # filled in by record_result
    src_rank: int | None = None  # WorkerLoad.rank of src and dst (None for simulated instances)
    dst_rank: int | None = None

    @property
    def migrates(self) -> bool:
        return self.kind != "skip"


BandwidthFn = Callable[[WorkerLoad, WorkerLoad], tuple[float, float]]  # -> (bytes/s, latency s)


def graph_bandwidth(graph, default_gbps: float = 25.0) -> BandwidthFn:
    """Link bandwidth and latency between two workers' topology nodes (``bandwidth_gbps``: GB/s).

    Uses the planner's :func:`llmplan.plan.costmodel.best_link` (direct edge, else the widest
    path); workers without a node, or on the same node, get ``default_gbps`` and no latency.
    """
    from llmplan.plan.costmodel import best_link

    def fn(a: WorkerLoad, b: WorkerLoad) -> tuple[float, float]:
        if a.node is None or b.node is None or a.node == b.node:
            return default_gbps * 1e9, 0.0
        link = best_link(graph, a.node, b.node)
        return link.bandwidth, link.latency_s

    return fn


@dataclass(slots=True)
class ControllerConfig:
    period_s: float = 1.0
    delta_up: float = 0.15  # enter the over/underloaded set beyond L_bar +- delta_up
    delta_down: float = 0.05  # leave it only within L_bar +- delta_down
    ewma: float = 0.5  # weight of the newest sample
    rho_min: float = 2.0
    horizon_s: float = 10.0  # how long an imbalance is expected to last
    sync_s: float = 0.005  # T_sync: barrier + switching the layer map / attention plan
    cooldown_s: float = 5.0
    reverse_lockout_s: float = 30.0
    max_migrations_per_step: int = 1
    # Only a worker this loaded is worth relieving: at low load a relative imbalance costs nothing.
    min_src_load: float = 0.5
    default_bandwidth_gbps: float = 25.0
    # Weight of the newest measured/modelled time ratio in the calibration EWMA; 0 turns it off.
    calibration_ewma: float = 0.5

    def validate(self) -> None:
        if self.period_s <= 0:
            raise LlmplanError(f"migration period must be > 0 s, got {self.period_s}")
        if not 0 <= self.delta_down <= self.delta_up:
            raise LlmplanError(
                f"hysteresis needs 0 <= delta_down <= delta_up, got {self.delta_down} and {self.delta_up}"
            )
        if not 0 < self.ewma <= 1:
            raise LlmplanError(f"ewma weight must be in (0, 1], got {self.ewma}")
        if self.rho_min < 0 or self.horizon_s <= 0 or self.sync_s < 0:
            raise LlmplanError("rho_min >= 0, horizon_s > 0 and sync_s >= 0 are required")
        if not 0 <= self.calibration_ewma <= 1:
            raise LlmplanError(f"calibration_ewma must be in [0, 1], got {self.calibration_ewma}")


@dataclass(slots=True)
class MigrationController:
    config: ControllerConfig = field(default_factory=ControllerConfig)
    bandwidth: BandwidthFn | None = None
    # The most recent decisions (skips included); bounded so a long-running server does not grow.
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=10_000))
    counters: Counter = field(default_factory=Counter)
    overloaded: set[str] = field(default_factory=set)
    underloaded: set[str] = field(default_factory=set)
    _smoothed: dict[str, float] = field(default_factory=dict)
    _last_step: float = -math.inf
    _busy_until: dict[str, float] = field(default_factory=dict)
    _last_move: dict[tuple[str, str], float] = field(default_factory=dict)
    time_ratio: dict[str, float] = field(default_factory=dict)  # kind -> EWMA of measured / modelled

    def __post_init__(self) -> None:
        self.config.validate()

    # ------------------------------------------------------------------ public API
    def step(self, now: float, loads: Sequence[WorkerLoad]) -> list[Decision]:
        """One control period; returns the migrations to run now (skips are only logged)."""
        cfg = self.config
        if now - self._last_step < cfg.period_s - 1e-12:
            return []
        self._last_step = now
        if len(loads) < 2:
            return []
        names = [w.name for w in loads]
        if len(set(names)) != len(names):
            raise LlmplanError(f"worker names must be unique, got {names}")
        self.counters["steps"] += 1
        for w in loads:
            prev = self._smoothed.get(w.name)
            self._smoothed[w.name] = w.load if prev is None else cfg.ewma * w.load + (1 - cfg.ewma) * prev
        smooth = {w.name: self._smoothed[w.name] for w in loads}
        mean = sum(smooth.values()) / len(smooth)
        self._update_sets(smooth, mean)

        by_name = {w.name: w for w in loads}
        over = sorted((n for n in self.overloaded if n in by_name), key=lambda n: -smooth[n])
        under = sorted((n for n in self.underloaded if n in by_name), key=lambda n: smooth[n])
        out: list[Decision] = []
        used: set[str] = set()
        for o in over:
            if len(out) >= cfg.max_migrations_per_step:
                break
            d = self._plan_for(now, by_name[o], [by_name[u] for u in under if u not in used], smooth)
            self._log(d)
            if d.migrates:
                out.append(d)
                used.update((d.src, d.dst))
                self._busy_until[d.src] = self._busy_until[d.dst] = now + cfg.cooldown_s
                self._last_move[(d.src, d.dst)] = now
        return out

    def record_result(self, decision: Decision, measured_time_s: float, *, calibrate: bool = True) -> None:
        """The executor reports how long the migration really took (logged beside the estimate).

        ``calibrate=False`` when what ran is not what was priced (e.g. heads given back instead of
        offloaded: nothing travelled), so the ratio learns only from like-for-like moves."""
        decision.measured_time_s = measured_time_s
        self.counters["migration_seconds_total"] += measured_time_s
        self.counters["migration_estimated_seconds_total"] += decision.est_time_s
        w = self.config.calibration_ewma
        if calibrate and w > 0 and decision.est_time_s > 0 and measured_time_s > 0:
            r = measured_time_s / decision.est_time_s
            prev = self.time_ratio.get(decision.kind)
            self.time_ratio[decision.kind] = r if prev is None else w * r + (1 - w) * prev
        log.info("migration %s %s->%s took %.4f s (estimate %.4f s; %s cost ratio now %.2f)", decision.kind,
                 decision.src, decision.dst, measured_time_s, decision.est_time_s, decision.kind,
                 self.time_ratio.get(decision.kind, 1.0))

    def metrics(self) -> dict[str, float]:
        """Counters for /metrics (``llmplan_migration_<name>``)."""
        return dict(self.counters)

    # ---------------------------------------------------------------- internals
    def _update_sets(self, smooth: dict[str, float], mean: float) -> None:
        cfg = self.config
        for n, v in smooth.items():
            dev = v - mean
            was_over, was_under = n in self.overloaded, n in self.underloaded
            is_over = dev > cfg.delta_up or (was_over and dev > cfg.delta_down)
            is_under = dev < -cfg.delta_up or (was_under and dev < -cfg.delta_down)
            for flag, was, group in (
                (is_over, was_over, self.overloaded),
                (is_under, was_under, self.underloaded),
            ):
                if flag and not was:
                    group.add(n)
                    self.counters["set_changes"] += 1
                elif was and not flag:
                    group.discard(n)
                    self.counters["set_changes"] += 1

    def _skip(self, now: float, src: WorkerLoad, dst: WorkerLoad | None, code: str, reason: str,
              smooth) -> Decision:
        return Decision(now, "skip", src.name, dst.name if dst else "", reason, code,
                        load_src=smooth[src.name], load_dst=smooth[dst.name] if dst else 0.0,
                        src_rank=src.rank, dst_rank=dst.rank if dst else None)

    def _plan_for(self, now: float, src: WorkerLoad, cands: list[WorkerLoad], smooth) -> Decision:
        cfg = self.config
        if smooth[src.name] < cfg.min_src_load:
            return self._skip(now, src, None, "not_busy",
                              f"load {smooth[src.name]:.3f} < {cfg.min_src_load}: nothing to relieve", smooth)
        if self._busy_until.get(src.name, -math.inf) > now:
            return self._skip(now, src, None, "cooldown", "source migrated recently", smooth)
        free = [u for u in cands if self._busy_until.get(u.name, -math.inf) <= now]
        if not free:
            return self._skip(now, src, None, "no_target", "no underloaded worker outside its cool-down",
                              smooth)
        best: Decision | None = None
        for dst in free:
            back = self._last_move.get((dst.name, src.name))
            if back is not None and now - back < cfg.reverse_lockout_s:
                d = self._skip(now, src, dst, "reverse_lockout",
                               "reverse of a recent migration (anti ping-pong lockout)", smooth)
            else:
                d = self._size(now, src, dst, smooth)
            if best is None or (d.migrates, d.rho) > (best.migrates, best.rho):
                best = d
        assert best is not None
        return best

    def _size(self, now: float, src: WorkerLoad, dst: WorkerLoad, smooth) -> Decision:
        cfg = self.config
        ls, ld = smooth[src.name], smooth[dst.name]
        gap = ls - ld
        adjacent = (
            src.layers is not None and dst.layers is not None and src.instance == dst.instance
            and (src.layers[1] == dst.layers[0] or dst.layers[1] == src.layers[0])
        )
        compute_bound = src.compute_share >= src.memory_share
        kind: Kind = "layer" if (adjacent and compute_bound and src.num_layers > 1) else "attention"
        why_kind = (
            "compute-bound and adjacent stage: move boundary layers" if kind == "layer"
            else "memory-bound: offload attention KV" if not compute_bound
            else "not an adjacent stage: offload attention KV" if not adjacent
            else "compute-bound but its last layer: offload attention KV"
        )
        bw, lat = (self.bandwidth or self._default_bw)(src, dst)
        if kind == "layer":
            per_src = ls / src.num_layers
            per_dst = ld / max(dst.num_layers, 1)
            k = min(src.num_layers - 1, max(1, round(gap / 2 / per_src)))
            # Largest k that still shrinks the pair's imbalance; 0 means any move overshoots.
            while k > 0 and abs((ls - k * per_src) - (ld + k * per_dst)) >= abs(gap):
                k -= 1
            if k == 0:
                return self._skip(now, src, dst, "overshoot", f"one layer ({per_src:.3f} load) would "
                                  f"overshoot the gap {gap:.3f}: no layer move shrinks the imbalance", smooth)
            assert src.layers is not None and dst.layers is not None
            start, end = src.layers
            # The boundary the two stages share: src's tail goes to the next stage, its head to the previous.
            moved = tuple(range(end - k, end)) if end == dst.layers[0] else tuple(range(start, start + k))
            nbytes = k * (src.layer_weight_bytes + src.movable_kv_bytes / src.num_layers)
            relief = k * per_src
            frac = 0.0
        else:
            # Attention work and KV scale together with the share of heads/blocks moved.
            frac = min(0.5, gap / 2 / ls) if ls > 0 else 0.0
            nbytes = frac * src.movable_kv_bytes
            relief = frac * ls
            moved = ()
        est = nbytes / bw + lat + cfg.sync_s
        ratio = self.time_ratio.get(kind, 1.0)
        expected = est * ratio
        benefit = relief * cfg.horizon_s  # bottleneck time saved while the imbalance lasts
        rho = benefit / expected if expected > 0 else math.inf
        common = dict(layers=moved, kv_fraction=frac, bytes=nbytes, est_time_s=est, expected_time_s=expected,
                      benefit_s=benefit, rho=rho, load_src=ls, load_dst=ld,
                      src_rank=src.rank, dst_rank=dst.rank)
        calibrated = f" x {ratio:.2f} measured/modelled so far" if kind in self.time_ratio else ""
        if rho < cfg.rho_min:
            return Decision(now, "skip", src.name, dst.name,
                            f"rho={rho:.2f} < {cfg.rho_min}: moving {nbytes / 1e6:.1f} MB takes "
                            f"{expected:.3f} s{calibrated} for {benefit:.3f} s of benefit",
                            "rho_low", **common)
        reason = (f"L={ls:.3f} vs {ld:.3f} (mean gap {gap:.3f}); {why_kind}; rho={rho:.1f} "
                  f"(T={est:.4f} s = {nbytes / 1e6:.1f} MB / {bw / 1e9:.1f} GB/s + sync{calibrated})")
        return Decision(now, kind, src.name, dst.name, reason, **common)

    def _default_bw(self, a: WorkerLoad, b: WorkerLoad) -> tuple[float, float]:
        return self.config.default_bandwidth_gbps * 1e9, 0.0

    def _log(self, d: Decision) -> None:
        self.decisions.append(d)
        if d.migrates:
            self.counters[f"{d.kind}_migrations"] += 1
            self.counters["bytes_moved_total"] += d.bytes
            log.info("migrate %s %s->%s: %s", d.kind, d.src, d.dst, d.reason)
        else:
            self.counters["skipped"] += 1
            self.counters[f"skipped_{d.code}"] += 1
            log.debug("no migration for %s: %s", d.src, d.reason)
