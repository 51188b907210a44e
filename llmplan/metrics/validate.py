"""Integrity checks on a RunResult before any statistic is computed.

A negative or NaN time, a finished request without a first token, or a request that
vanished is a bug in whatever produced the result (simulator or live client). We raise
instead of averaging it away, so a wrong number never reaches a report.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.metrics.tokens import TokenTimes, token_times
from llmplan.metrics.types import RequestRecord, RunResult
from llmplan.workload.types import Workload

# Clocks are floats; allow rounding noise when checking event order.
_EPS = 1e-9


class InvalidRunResultError(LlmplanError):
    """The run result violates an invariant: a bug in its producer, not in the user's input."""


def _bad(rid: int, what: str) -> InvalidRunResultError:
    return InvalidRunResultError(
        f"request {rid}: {what}; a bug in the simulator/bench client that produced the run"
    )


def validate_run(
    result: RunResult, workload: Workload | None = None, tokens: TokenTimes | None = None
) -> None:
    """Raise :class:`InvalidRunResultError` on the first violated invariant.

    Conservation (with ``workload``): every request appears exactly once, as ``ok`` or as
    ``rejected``/``failed`` with a reason.
    """
    _check_conservation(result, workload)
    for r in result.records:
        _check_record(r)
    _check_token_times(result, tokens if tokens is not None else token_times(result.records))
    _check_samples(result)


def _check_conservation(result: RunResult, workload: Workload | None) -> None:
    """Each rid recorded once; with ``workload``, exactly the workload's rids."""
    seen = Counter(r.rid for r in result.records)
    dup = [rid for rid, c in seen.items() if c > 1]
    if dup:
        raise _bad(dup[0], f"appears {seen[dup[0]]} times in the records")
    if workload is not None:
        want = {r.rid for r in workload.requests}
        missing = want - seen.keys()
        extra = seen.keys() - want
        if missing:
            raise _bad(min(missing), f"is in the workload but has no record ({len(missing)} requests lost)")
        if extra:
            raise _bad(min(extra), "has a record but is not in the workload")


def _check_record(r: RequestRecord) -> None:
    """One record: finite times in order, counts >= 0, a status that fits its fields."""
    for name in ("arrival_s", "first_scheduled_s", "first_token_s", "finish_s"):
        v = getattr(r, name)
        if v is not None and (not math.isfinite(v) or v < 0):
            raise _bad(r.rid, f"{name} = {v} (times must be finite and >= 0)")
    if r.output_tokens < 0 or r.prompt_tokens < 0:
        raise _bad(r.rid, f"negative token count (prompt {r.prompt_tokens}, output {r.output_tokens})")
    if r.status == "ok":
        if r.first_token_s is None or r.finish_s is None:
            raise _bad(r.rid, "status ok but first_token_s or finish_s is missing")
        if r.output_tokens < 1:
            raise _bad(r.rid, "status ok with no output tokens")
    elif r.status in ("rejected", "failed"):
        if not r.reason:
            raise _bad(r.rid, f"status {r.status} without a reason")
    else:
        raise _bad(r.rid, f"unknown status {r.status!r}")
    chain = [("arrival_s", r.arrival_s), ("first_scheduled_s", r.first_scheduled_s)]
    chain += [("first_token_s", r.first_token_s), ("finish_s", r.finish_s)]
    prev_name, prev = chain[0]
    for name, v in chain[1:]:
        if v is None:
            continue
        if v + _EPS < prev:
            raise _bad(r.rid, f"{name} = {v:.6f} is before {prev_name} = {prev:.6f}")
        prev_name, prev = name, v


def _check_samples(result: RunResult) -> None:
    for s in result.samples:
        if not (math.isfinite(s.t_s) and s.t_s >= 0 and 0 <= s.busy_frac <= 1 + _EPS):
            raise InvalidRunResultError(
                f"instance {s.instance} sample at t={s.t_s}: bad time or busy_frac {s.busy_frac}; "
                "this is a bug in the producer of the run"
            )
        if s.kv_blocks_used < 0 or s.kv_blocks_used > s.kv_blocks_total:
            raise InvalidRunResultError(
                f"instance {s.instance} sample at t={s.t_s}: kv_blocks_used {s.kv_blocks_used} outside "
                f"0..{s.kv_blocks_total}; this is a bug in the producer of the run"
            )


def _check_token_times(result: RunResult, tt: TokenTimes) -> None:
    if len(tt.flat) == 0:
        return
    recs = result.records
    bad = np.flatnonzero(~np.isfinite(tt.flat))
    if len(bad):
        owner = int(np.searchsorted(tt.starts, bad[0], side="right") - 1)
        raise _bad(recs[owner].rid, "a token time is NaN or infinite")
    gaps, owner = tt.gaps()
    back = np.flatnonzero(gaps < -_EPS)
    if len(back):
        raise _bad(recs[int(owner[back[0]])].rid, "token times go backwards")
    has = np.flatnonzero(tt.counts > 0)
    first = tt.flat[tt.starts[has]]
    ft = np.array([recs[i].first_token_s if recs[i].first_token_s is not None else np.nan for i in has])
    off = np.flatnonzero(~(np.abs(first - ft) <= 1e-6))
    if len(off):
        i = int(has[off[0]])
        raise _bad(
            recs[i].rid, f"first token time {first[off[0]]:.6f} != first_token_s {recs[i].first_token_s}"
        )
