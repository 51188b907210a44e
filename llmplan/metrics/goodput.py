"""Goodput, two ways.

- vLLM's ``--goodput`` (per run): completed requests that meet all their SLOs, per second
  of run duration. It lives in :func:`llmplan.metrics.summary.summarize` as ``goodput_rps``.
- DistServe's (per sweep): the highest request rate at which SLO attainment stays at or
  above a target (90% by default). We report the highest swept rate such that it and
  every lower swept rate meet the target (a rate that passes only above a failing one is
  noise, not capacity), plus the linearly interpolated crossing with the next rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True, slots=True)
class DistServeGoodput:
    target: float
    rate_rps: float | None  # highest swept rate meeting the target; None if even the lowest fails
    interpolated_rps: float | None  # crossing between that rate and the next, None if no next
    all_pass: bool  # the whole sweep met the target: the true goodput is above the sweep

    def to_dict(self) -> dict:
        return asdict(self)


def distserve_goodput(
    rates: Sequence[float], attainment: Sequence[float], target: float = 0.9
) -> DistServeGoodput:
    if len(rates) != len(attainment) or not rates:
        raise ValueError("distserve_goodput needs equally long, non-empty rate and attainment lists")
    if not 0 < target <= 1:
        raise ValueError(f"attainment target must be in (0, 1], got {target}")
    pts = sorted(zip(rates, attainment, strict=True))
    best: int | None = None
    for i, (_, a) in enumerate(pts):
        if a + 1e-12 < target:
            break
        best = i
    if best is None:
        return DistServeGoodput(target, None, None, False)
    if best == len(pts) - 1:
        return DistServeGoodput(target, pts[best][0], None, True)
    (r0, a0), (r1, a1) = pts[best], pts[best + 1]
    interp = r0 + (a0 - target) / (a0 - a1) * (r1 - r0) if a0 != a1 else r0
    return DistServeGoodput(target, r0, interp, False)
