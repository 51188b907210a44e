"""Pricing iterations: the simulator's executor and closed-form runs of decode steps.

A run of ``k`` pure decode steps of the same ``n`` sequences has shapes that differ only in
``decode_ctx``, which grows by ``n`` per step. The planner's roofline cost is a sum of
``max(linear, linear)`` terms in ``decode_ctx``, i.e. convex and piecewise linear in the step
index. :func:`decode_run` finds the linear pieces by bisection (a convex function that meets
its chord at an interior point is linear on that interval; for safety three interior points
are checked and short pieces are priced step by step) and sums each piece in closed form, so a
run costs O(pieces * log k) cost-model calls instead of k. Any ``IterationCost`` works;
non-convex ones (e.g. a calibration table) are still priced exactly wherever they are
piecewise linear on the checked points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmplan.plan.costmodel import BatchShape, IterationCost
from llmplan.runtime.core.types import ScheduledBatch, StepResult

_SHORT = 8  # pieces at most this long are priced step by step
_RTOL = 1e-9


def batch_shape(batch: ScheduledBatch) -> BatchShape:
    """The aggregate shape of a scheduled batch, padding included."""
    pad = batch.padding
    pt = pad.prefill_tokens
    pa = pad.prefill_attn
    ds = pad.decode_seqs
    dc = pad.decode_ctx
    for it in batch.items:
        n = it.num_new_tokens
        if it.is_prefill:
            pt += n
            pa += n * (it.context_len + n / 2)
        else:
            ds += n
            dc += it.context_len
    return BatchShape(prefill_tokens=pt, prefill_attn=pa, decode_seqs=ds, decode_ctx=dc)


class CostExecutor:
    """The simulator's :class:`~llmplan.runtime.core.types.Executor`: prices, computes nothing."""

    def __init__(self, cost: IterationCost) -> None:
        self.cost = cost

    def execute(self, batch: ScheduledBatch) -> StepResult:
        return StepResult(self.cost.iteration_time(batch_shape(batch)))


@dataclass(slots=True)
class DecodeRun:
    """A priced run of decode steps as linear pieces: step ``first + m - 1`` of a piece ends
    at ``base + m*a + b*m*(m-1)/2`` seconds after the run's start (m = 1..length)."""

    steps: int
    duration_s: float
    # (first step index, base elapsed time, a, b, length)
    pieces: list[tuple[int, float, float, float, int]]

    def end_of(self, i: int) -> float:
        """End of step ``i`` (0-based), relative to the run's start."""
        for first, base, a, b, length in self.pieces:
            if i < first + length:
                m = i - first + 1
                return base + m * a + b * m * (m - 1) / 2
        raise IndexError(i)

    def count_before(self, rel_s: float) -> int:
        """How many steps end strictly before ``rel_s``."""
        for first, base, a, b, length in self.pieces:
            m = _steps_within(a, b, length, rel_s - base)
            if m < length:
                return first + m
        return self.steps

    def ends(self) -> list[float]:
        out: list[float] = []
        for _, base, a, b, length in self.pieces:
            out.extend(base + m * a + b * m * (m - 1) / 2 for m in range(1, length + 1))
        return out


def decode_run(cost: IterationCost, shape0: BatchShape, kmax: int, budget_s: float = math.inf) -> DecodeRun:
    """Price up to ``kmax`` decode steps starting from ``shape0`` (context growing by
    ``shape0.decode_seqs`` per step), keeping the longest prefix whose steps all *end* strictly
    before ``budget_s`` (relative to the run's start). At least one step is always kept.
    """
    seqs, ctx0 = shape0.decode_seqs, shape0.decode_ctx
    cache: dict[int, float] = {}

    def t(j: int) -> float:
        v = cache.get(j)
        if v is None:
            v = cost.iteration_time(BatchShape(decode_seqs=seqs, decode_ctx=ctx0 + j * seqs))
            cache[j] = v
        return v

    def linear(lo: int, hi: int) -> bool:
        a, b = t(lo), t(hi)
        span = hi - lo
        tol = _RTOL * max(abs(a), abs(b))
        for q in (span // 4, span // 2, (3 * span) // 4):
            if 0 < q < span and abs(t(lo + q) - (a + (b - a) * q / span)) > tol:
                return False
        return True

    elapsed = 0.0
    steps = 0
    pieces: list[tuple[int, float, float, float, int]] = []
    stack = [(0, kmax - 1)]
    while stack:
        lo, hi = stack.pop()
        length = hi - lo + 1
        if length > _SHORT and not linear(lo, hi):
            mid = (lo + hi) // 2
            stack.append((mid + 1, hi))
            stack.append((lo, mid))
            continue
        if length <= _SHORT:
            for j in range(lo, hi + 1):
                a = t(j)
                if elapsed + a >= budget_s and steps > 0:
                    return DecodeRun(steps, elapsed, pieces)
                pieces.append((steps, elapsed, a, 0.0, 1))
                elapsed += a
                steps += 1
            continue
        a = t(lo)
        b = (t(hi) - a) / (hi - lo)
        m = _steps_within(a, b, length, budget_s - elapsed)
        if m == 0 and steps == 0:
            m = 1  # the first step always runs
        if m:
            pieces.append((steps, elapsed, a, b, m))
            elapsed += m * a + b * m * (m - 1) / 2
            steps += m
        if m < length:
            break
    return DecodeRun(steps, elapsed, pieces)


def _steps_within(a: float, b: float, length: int, room: float) -> int:
    """Largest m in [0, length] with S(m) = m*a + b*m*(m-1)/2 < room (S increasing)."""
    if room <= 0:
        return 0
    if room == math.inf:
        return length

    def s(m: int) -> float:
        return m * a + b * m * (m - 1) / 2

    if s(length) < room:
        return length
    if abs(b) < 1e-300:
        m = int(room / a) if a > 0 else length
    else:
        # b/2 m^2 + (a - b/2) m - room = 0
        qa, qb = b / 2, a - b / 2
        disc = qb * qb + 4 * qa * room
        m = int((-qb + math.sqrt(max(0.0, disc))) / (2 * qa)) if disc >= 0 else 0
    m = max(0, min(length, m))
    while m > 0 and s(m) >= room:
        m -= 1
    while m < length and s(m + 1) < room:
        m += 1
    return m


@dataclass(frozen=True, slots=True)
class LinearCost:
    """``t = base + per_token * tokens + per_ctx * decode_ctx + per_pair * prefill_attn``.

    A transparent cost for tests and hand calculations (tokens = prefill tokens + decode
    sequences); the real one is the planner's roofline (``llmplan.plan.costmodel.InstanceCost``).
    """

    base_s: float = 0.01
    per_token_s: float = 1e-4
    per_ctx_s: float = 1e-6
    per_pair_s: float = 0.0

    def iteration_time(self, shape: BatchShape) -> float:
        tokens = shape.prefill_tokens + shape.decode_seqs
        if tokens <= 0:
            return 0.0
        return (
            self.base_s
            + self.per_token_s * tokens
            + self.per_ctx_s * shape.decode_ctx
            + self.per_pair_s * shape.prefill_attn
        )
