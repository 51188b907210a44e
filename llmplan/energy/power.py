"""GPU power and SM-clock model: a layer on top of any :class:`~llmplan.plan.costmodel.IterationCost`.

The base cost model (roofline or :mod:`llmplan.opcost`) prices an iteration at the GPU's maximum
SM clock. This module does not change it; it splits that time into three parts and scales them
with the clock ratio ``r = f / f_max`` (memory clock fixed):

* **compute-bound** ``C``: the iteration's FLOPs over the tensor peak (times ``compute_eff``),
  scales as ``1 / r``;
* **memory-bound** ``M``: weight, KV and activation bytes over HBM bandwidth (times
  ``memory_eff``), barely scales: ``M * (1 + mem_sens * (1 / r - 1))``;
* the **rest** ``O = t - max(C, M)`` (launches, small ops, scheduler), ``O * (1 + ovh_sens * (1/r - 1))``.

``t(r) = O(r) + max(C / r, M(r))``: prefill (compute-bound) slows almost proportionally at a lower
clock, decode (memory-bound) hardly until ``C / r`` overtakes ``M``. That is where the decode
**staircase** shows: the tensor cores work on tiles of ``tile_tokens`` rows, so ``C`` uses the token
count rounded up to a tile and a decode batch that crosses a tile boundary pays a step, which a
low clock exposes.

Power while busy: ``P = P_static + P_dyn * u * r ** alpha`` with ``u`` the SM activity (1 for the
compute-bound share of the time, ``mem_activity`` for the memory-bound share, ``ovh_activity`` for
the rest); idle GPUs draw ``P_idle``. Energy per iteration is ``P * t`` summed over the parts.
Energy per request against the clock is U-shaped: static power dominates at low clocks,
``r ** alpha`` at high ones; the minimum is where ``alpha - 1 = P_static / (P_dyn r ** alpha)`` for
compute-bound work.

Parameters per GPU kind are in :data:`CLOCK_POWER` with their sources; a measured set of samples
(``llmplan.energy.measure``) refits ``P_static``, ``P_dyn`` and ``alpha`` (:func:`fit_power`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.plan.costmodel import BatchShape, IterationCost, KVSizedCost


@dataclass(frozen=True, slots=True)
class ClockPower:
    """Clock range and power parameters of one GPU kind (watts, MHz).

    ``source`` says where each figure comes from; ``estimated`` lists the fields that are
    estimates (no vendor figure or published measurement).
    """

    model: str
    f_max_mhz: float  # max boost SM clock (vendor datasheet)
    f_min_mhz: float  # lowest clock worth locking (see source)
    tdp_w: float
    idle_w: float  # board power with nothing running, at the idle clock
    static_w: float  # busy, clock-independent: HBM, leakage, fans/VRM, uncore
    dyn_w: float  # SM dynamic power at f_max and full activity: static + dyn ~ TDP
    alpha: float = 3.0  # P_dyn ~ f * V(f)^2 ~ f^alpha over the DVFS range
    mem_activity: float = 0.45  # SM activity while memory-bound (decode), share of dyn
    ovh_activity: float = 0.25  # SM activity during launches / small ops
    mem_sens: float = 0.08  # share of memory-bound time that still scales with 1/r
    ovh_sens: float = 0.5  # share of the rest (launch gaps, small kernels) that scales with 1/r
    tile_tokens: int = 64  # GEMM tile rows: the decode staircase step
    step_mhz: float = 15.0  # clock granularity (nvidia-smi -q -d SUPPORTED_CLOCKS)
    source: str = ""
    estimated: tuple[str, ...] = ()

    def power_w(self, r: float, activity: float) -> float:
        return self.static_w + self.dyn_w * activity * r**self.alpha

    def ladder(self, levels: int = 0) -> tuple[float, ...]:
        """Clocks the controller may pick, low to high: ``levels`` evenly spaced ones rounded to
        the clock step (0: every ``step_mhz`` from ``f_min`` up)."""
        lo, hi = self.f_min_mhz, self.f_max_mhz
        if levels <= 1:
            n = int((hi - lo) // self.step_mhz)
            out = [lo + k * self.step_mhz for k in range(n + 1)]
        else:
            out = [lo + (hi - lo) * k / (levels - 1) for k in range(levels)]
            out = [round(f / self.step_mhz) * self.step_mhz for f in out]
        out[-1] = hi
        return tuple(sorted(set(min(hi, max(lo, f)) for f in out)))


_NV_AMPERE = "NVIDIA A100 datasheet (TDP, 1410 MHz boost); nvidia-smi SUPPORTED_CLOCKS 210-1410 MHz step 15"
_NV_HOPPER = "NVIDIA H100 datasheet (TDP, 1980 MHz max boost SXM5 / 1755 PCIe)"
_MEAS = (
    "static/alpha: estimates chosen so that the model's compute-bound energy minimum lands near the "
    "~1005 MHz lowest-energy A100 clock GreenServe reports (a published figure, not our measurement)"
)
_EST = ("idle_w", "static_w", "alpha", "mem_activity", "ovh_activity", "mem_sens", "ovh_sens", "tile_tokens")


def _cp(model, fmax, fmin, tdp, idle, static, alpha=3.0, source="", estimated=_EST, **kw) -> ClockPower:
    return ClockPower(
        model, float(fmax), float(fmin), float(tdp), float(idle), float(static), float(tdp - static),
        alpha, source=source, estimated=estimated, **kw
    )


def _frac(model: str, fmax: float, fmin: float, tdp: float, src: str) -> ClockPower:
    """Vendor TDP and clocks; idle 15% and busy static 35% of TDP (estimates, no measurement)."""
    return _cp(model, fmax, fmin, tdp, round(0.15 * tdp), round(0.35 * tdp), 3.0,
               f"{src}; idle/static as fractions of TDP (estimate)")


# A100/H100: the fullest sets. alpha: with static 150 W and dyn 250 W on an A100, the compute-bound
# energy minimum r* solves (alpha - 1) r*^alpha = static/dyn = 0.6; alpha = 3 gives r* = 0.67
# (~950 MHz), alpha = 2.6 gives 0.71 (~1005 MHz, the optimum GreenServe reports). Estimates.
CLOCK_POWER: dict[str, ClockPower] = {
    c.model: c
    for c in (
        _cp("A100-SXM-80GB", 1410, 210, 400, 60, 150, 2.6, f"{_NV_AMPERE}; idle 60 W from nvidia-smi on "
            f"idle SXM4 boards (estimate); {_MEAS}"),
        _cp("A100-SXM-40GB", 1410, 210, 400, 55, 145, 2.6, f"{_NV_AMPERE}; {_MEAS}"),
        _cp("A100-PCIe-80GB", 1410, 210, 300, 45, 110, 2.6, f"{_NV_AMPERE} (PCIe 300 W); {_MEAS}"),
        _cp("A100-PCIe-40GB", 1410, 210, 250, 40, 95, 2.6, f"{_NV_AMPERE} (PCIe 250 W); {_MEAS}"),
        _cp("A800-SXM-80GB", 1410, 210, 400, 60, 150, 2.6, f"A800 datasheet = A100 SXM; {_MEAS}"),
        _cp("H100-SXM", 1980, 345, 700, 75, 260, 2.6, f"{_NV_HOPPER}; min clock 345 MHz and idle ~75 W "
            "(estimates from nvidia-smi reports); static/alpha scaled from the A100 set (estimate)"),
        _cp("H100-PCIe", 1755, 345, 350, 50, 130, 2.6, f"{_NV_HOPPER}; rest as H100-SXM (estimate)"),
        _cp("H100-NVL", 1785, 345, 400, 55, 150, 2.6, f"{_NV_HOPPER} (NVL 400 W); rest as H100-SXM"),
        _cp("H200", 1980, 345, 700, 80, 280, 2.6, "H200 datasheet (700 W, same GH100 die); rest as H100-SXM"),
        _cp("H800-SXM", 1980, 345, 700, 75, 260, 2.6, "H800 = H100 SXM die; rest as H100-SXM (estimate)"),
        _frac("H20", 1980, 345, 400, "H20 spec (400 W); clocks as H100 (estimate)"),
        _frac("B200", 1965, 345, 1000, "HGX B200 spec (1000 W); clocks estimated"),
        _frac("L40S", 2520, 210, 350, "L40S datasheet (350 W, 2520 MHz boost)"),
        _frac("L40", 2490, 210, 300, "L40 datasheet (300 W, 2490 MHz boost)"),
        _frac("A40", 1740, 210, 300, "A40 datasheet (300 W, 1740 MHz boost)"),
        _frac("A10", 1695, 210, 150, "A10 datasheet (150 W, 1695 MHz boost)"),
        _frac("L4", 2040, 210, 72, "L4 datasheet (72 W, 2040 MHz boost)"),
        _frac("V100-SXM2-16GB", 1530, 135, 300, "V100 datasheet (300 W, 1530 MHz boost)"),
        _frac("V100-SXM2-32GB", 1530, 135, 300, "V100 datasheet (300 W, 1530 MHz boost)"),
        _frac("V100-PCIe", 1380, 135, 250, "V100 datasheet (250 W, 1380 MHz boost)"),
        _frac("P100-SXM2", 1480, 544, 300, "P100 datasheet (300 W, 1480 MHz boost)"),
        _frac("P100-PCIe", 1329, 544, 250, "P100 datasheet (250 W, 1329 MHz boost)"),
        _frac("T4", 1590, 300, 70, "T4 datasheet (70 W, 1590 MHz boost)"),
        _frac("RTX-3090", 1695, 210, 350, "GA102 whitepaper (350 W, 1695 MHz boost)"),
        _frac("RTX-4090", 2520, 210, 450, "Ada whitepaper (450 W, 2520 MHz boost)"),
        _frac("RTX-A6000", 1800, 210, 300, "RTX A6000 datasheet (300 W, 1800 MHz boost)"),
        _frac("RTX-6000-Ada", 2505, 210, 300, "RTX 6000 Ada datasheet (300 W, 2505 MHz boost)"),
        _frac("MI210", 1700, 500, 300, "AMD MI210 datasheet (300 W, 1700 MHz peak engine clock)"),
    )
}


def clock_power_for(gpu: str) -> ClockPower:
    """The parameters of a GPU name or model (``A100``, ``NVIDIA H100 80GB HBM3``, ``H100-SXM``)."""
    import warnings

    from llmplan.topology.specs import spec_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = gpu if gpu in CLOCK_POWER else spec_for(gpu).model
    cp = CLOCK_POWER.get(model)
    if cp is None:
        raise LlmplanError(
            f"no power/clock parameters for GPU {gpu!r}; energy is modelled for "
            f"{', '.join(sorted(CLOCK_POWER))}"
            " (or fit them from measured samples: llmplan.energy.power.fit_power)"
        )
    return cp


@dataclass(frozen=True, slots=True)
class IterEnergy:
    """One iteration at one clock: seconds, joules and the split of its time."""

    time_s: float
    energy_j: float
    compute_s: float  # compute-bound share of time_s
    memory_s: float
    other_s: float

    @property
    def power_w(self) -> float:
        return self.energy_j / self.time_s if self.time_s > 0 else 0.0


@dataclass(slots=True)
class ClockedCost:
    """An :class:`IterationCost` at a settable SM clock (``mhz``), with energy per iteration.

    Wraps the base cost (priced at ``f_max``) of one instance of ``gpus`` GPUs running ``spec``
    with tensor parallelism ``tp``; ``iteration_time`` answers at the current ``mhz``, so the
    simulator and its closed-form decode runs price the clock the controller set.
    """

    base: IterationCost
    spec: Any  # ModelSpec
    power: ClockPower
    flops: float  # per-GPU dense matmul FLOP/s at f_max
    mem_bw: float  # per-GPU bytes/s
    tp: int = 1
    gpus: int = 1
    compute_eff: float = 0.6
    memory_eff: float = 0.8
    mhz: float = 0.0  # 0: f_max
    _cache: dict = field(default_factory=dict, repr=False)
    _k: tuple | None = field(default=None, init=False, repr=False)

    def _coefficients(self) -> tuple:
        """Seconds per unit: (padded token, attention pair, logit) of compute; (fixed, KV token,
        token) of memory traffic -- the model's constants, computed once."""
        s = self.spec
        L = s.num_hidden_layers
        ic = 1.0 / (self.gpus * self.flops * self.compute_eff)
        im = 1.0 / (self.gpus * self.mem_bw * self.memory_eff)
        self._k = k = (
            L * 2.0 * s.layer_linear_params * ic, L * s.attn_flops_per_pair * ic, s.head_flops_per_token * ic,
            (L * s.layer_weight_bytes + s.vocab_size * s.hidden_size * s.dtype_bytes) * im,
            L * s.kv_bytes_per_token_layer * im, L * 4 * s.hidden_size * s.dtype_bytes * im,
        )
        return k

    @classmethod
    def wrap(cls, cost: Any, power: ClockPower | None = None) -> ClockedCost:
        """Wrap an :class:`~llmplan.plan.costmodel.InstanceCost` (the planner's or ops model)."""
        stages = getattr(cost, "stages", None)
        spec = getattr(cost, "spec", None)
        if not stages or spec is None:
            raise LlmplanError(
                f"cost {type(cost).__name__} does not say its model and GPUs; energy needs the planner's "
                "InstanceCost (a calibration table has no compute/memory split)"
            )
        g = stages[0].gpu
        tp = stages[0].tp
        p = cost.params
        pw = power or clock_power_for(g.name)
        return cls(cost, spec, pw, g.matmul_flops(spec), g.mem_bw, tp, sum(s.tp for s in stages),
                   p.compute_eff, p.memory_eff)

    @property
    def f_mhz(self) -> float:
        return self.mhz or self.power.f_max_mhz

    def at(self, mhz: float) -> ClockedCost:
        """A copy at another clock (shares nothing mutable)."""
        return replace(self, mhz=mhz, _cache={})

    # ---- the split ---------------------------------------------------------------------
    def _parts(self, shape: BatchShape, base_t: float | None = None) -> tuple[float, float, float, float]:
        """(t at f_max, C, M, O) for ``shape``, all seconds (``base_t``: the base model's time for
        it, when the caller already has it)."""
        key = (shape.prefill_tokens, shape.prefill_attn, shape.decode_seqs, shape.decode_ctx)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        tokens = shape.prefill_tokens + shape.decode_seqs
        if tokens <= 0:
            return (0.0, 0.0, 0.0, 0.0)
        t = self.base.iteration_time(shape) if base_t is None else base_t
        kl, ka, kh, m0, mk, mt = self._k or self._coefficients()
        tile = self.power.tile_tokens
        padded = -(-tokens // tile) * tile if tile > 1 else tokens
        c = kl * padded + ka * (shape.prefill_attn + shape.decode_ctx)
        c += kh * (shape.decode_seqs + (1 if shape.prefill_tokens else 0))
        m = m0 + mk * (shape.decode_ctx + tokens) + mt * tokens
        # The base model may price below the analytic roofline (fitted ops curves): rescale so
        # the parts add up to its time at f_max.
        top = max(c, m)
        if top > t:
            c, m = c * t / top, m * t / top
            top = t
        out = (t, c, m, t - top)
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = out
        return out

    def evaluate(
        self, shape: BatchShape, mhz: float | None = None, base_t: float | None = None
    ) -> IterEnergy:
        """Time and energy of one iteration of ``shape`` at ``mhz`` (default: the current clock)."""
        pw = self.power
        f = mhz or self.f_mhz
        r = min(1.0, max(1e-3, f / pw.f_max_mhz))
        t0, c, m, o = self._parts(shape, base_t)
        if t0 <= 0:
            return IterEnergy(0.0, 0.0, 0.0, 0.0, 0.0)
        inv = 1.0 / r - 1.0
        cr = c / r
        mr = m * (1.0 + pw.mem_sens * inv)
        orr = o * (1.0 + pw.ovh_sens * inv)
        if cr >= mr:
            comp, mem = cr, 0.0
        else:
            comp, mem = 0.0, mr
        t = orr + comp + mem
        p_c = pw.power_w(r, 1.0)
        p_m = pw.power_w(r, pw.mem_activity)
        p_o = pw.power_w(r, pw.ovh_activity)
        e = self.gpus * (comp * p_c + mem * p_m + orr * p_o)
        return IterEnergy(t, e, comp, mem, orr)

    # ---- IterationCost ---------------------------------------------------------------
    def iteration_time(self, shape: BatchShape) -> float:
        if not self.mhz or self.mhz >= self.power.f_max_mhz:
            return self.base.iteration_time(shape)
        return self.evaluate(shape).time_s

    def kv_capacity_blocks(self, block_size: int = 16) -> int:
        if not isinstance(self.base, KVSizedCost):
            raise LlmplanError(f"{type(self.base).__name__} does not size the KV cache; give the instance's "
                               "number of KV blocks")
        return int(self.base.kv_capacity_blocks(block_size))

    def idle_power_w(self) -> float:
        return self.gpus * self.power.idle_w


# ---------------------------------------------------------------------------- fitting
@dataclass(frozen=True, slots=True)
class PowerSample:
    """One measured interval on one GPU: SM clock, SM activity (0..1) and mean power."""

    mhz: float
    activity: float
    power_w: float


def fit_power(base: ClockPower, samples: Iterable[PowerSample]) -> tuple[ClockPower, float]:
    """Refit ``static_w``, ``dyn_w`` and ``alpha`` of ``base`` to measured samples by least squares
    (linear in static/dyn for each alpha on a grid, best alpha kept). Returns the fitted
    parameters and the RMS error in watts. Needs samples at >= 2 clocks and >= 3 in all."""
    import numpy as np

    pts = [s for s in samples if s.power_w > 0 and s.mhz > 0]
    if len(pts) < 3 or len({round(s.mhz) for s in pts}) < 2:
        raise LlmplanError(
            f"fitting power needs samples at two or more SM clocks ({len(pts)} usable); sweep locked clocks "
            "(llmplan calibrate --ops --device cuda) or record longer"
        )
    fmax = max(base.f_max_mhz, max(s.mhz for s in pts))
    r = np.array([s.mhz / fmax for s in pts])
    u = np.array([s.activity for s in pts])
    y = np.array([s.power_w for s in pts])
    best: tuple[float, float, float, float] | None = None
    for alpha in np.arange(1.0, 4.01, 0.05):
        a = np.stack([np.ones_like(r), u * r**alpha], axis=1)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        if coef[0] < 0 or coef[1] <= 0:
            continue
        rms = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
        if best is None or rms < best[0]:
            best = (rms, float(coef[0]), float(coef[1]), float(alpha))
    if best is None:
        raise LlmplanError(
            "the power samples do not rise with clock x activity; check that they come from a busy GPU"
        )
    rms, st, dy, alpha = best
    est = tuple(f for f in base.estimated if f not in ("static_w", "alpha"))
    fitted = replace(base, static_w=st, dyn_w=dy, alpha=alpha, f_max_mhz=fmax, estimated=est,
                     source=f"{base.source}; static/dyn/alpha fitted to {len(pts)} measured samples")
    return fitted, rms


def energy_optimal_mhz(cost: ClockedCost, shapes: Sequence[BatchShape]) -> tuple[float, float]:
    """The clock on the ladder with the fewest joules for ``shapes`` run back to back (ignoring idle
    power and deadlines): ``(mhz, joules)``."""
    best = (cost.power.f_max_mhz, math.inf)
    for f in cost.power.ladder():
        e = sum(cost.evaluate(s, f).energy_j for s in shapes)
        if e < best[1]:
            best = (f, e)
    return best
