"""Turning a trace's columns into a workload: time window, rate scaling, request cap.

Loaders hand over numpy columns; these helpers apply the user's shaping in one order
(window on the trace's own clock, then rate scaling, then the cap) and build the
:class:`RequestSpec` list once, which keeps the full Azure trace well under 0.5 s.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.workload.types import RequestSpec, Workload

_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*$")


def _seconds(text: str, what: str) -> float:
    m = _NUM.match(text)
    if not m:
        raise LlmplanError(
            f"bad {what} {text!r} in --window; write seconds with an optional s/m/h, e.g. 10m:20m"
        )
    return float(m.group(1)) * _UNIT[m.group(2)]


def parse_window(text: str | None) -> tuple[float, float | None] | None:
    """``"START:END"`` in trace seconds (s/m/h suffixes allowed, either side may be empty)."""
    if text is None or text.strip() == "":
        return None
    start_s, sep, end_s = text.partition(":")
    if not sep:
        raise LlmplanError(f"bad --window {text!r}; write START:END, e.g. 0:600 or 10m:20m or 30m:")
    start = _seconds(start_s, "start") if start_s.strip() else 0.0
    end = _seconds(end_s, "end") if end_s.strip() else None
    if end is not None and end <= start:
        raise LlmplanError(f"--window {text!r} is empty: END must be after START")
    return start, end


def shape(
    arrival_s: np.ndarray,
    prompt_tokens: np.ndarray,
    output_tokens: np.ndarray,
    *,
    prompts: Sequence[str | None] | None = None,
    rate_scale: float = 1.0,
    window: tuple[float, float | None] | None = None,
    max_requests: int | None = None,
) -> tuple[list[RequestSpec], dict]:
    """Apply window -> rate scale -> cap; arrivals are re-based so the first window second is 0."""
    if rate_scale <= 0 or not np.isfinite(rate_scale):
        raise LlmplanError(f"--rate-scale must be a positive number, got {rate_scale}")
    if max_requests is not None and max_requests < 1:
        raise LlmplanError(f"--max-requests must be >= 1, got {max_requests}")
    order = np.argsort(arrival_s, kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        arrival_s, prompt_tokens, output_tokens = arrival_s[order], prompt_tokens[order], output_tokens[order]
        if prompts is not None:
            prompts = [prompts[i] for i in order]
    meta: dict = {"requests_in_source": int(len(arrival_s))}
    if len(arrival_s):
        meta["source_span_s"] = float(arrival_s[-1] - arrival_s[0])
    t0 = 0.0
    if window is not None:
        start, end = window
        keep = arrival_s >= start
        if end is not None:
            keep &= arrival_s < end
        idx = np.flatnonzero(keep)
        arrival_s, prompt_tokens, output_tokens = arrival_s[idx], prompt_tokens[idx], output_tokens[idx]
        if prompts is not None:
            prompts = [prompts[i] for i in idx]
        t0 = start
        meta["window_s"] = [start, end]
    arrival = (arrival_s - t0) / rate_scale
    if max_requests is not None:
        arrival = arrival[:max_requests]
        prompt_tokens, output_tokens = prompt_tokens[:max_requests], output_tokens[:max_requests]
        if prompts is not None:
            prompts = prompts[:max_requests]
    if len(arrival) == 0:
        raise LlmplanError("the workload is empty after --window/--max-requests; widen the window")
    meta["rate_scale"] = rate_scale
    meta["max_requests"] = max_requests
    reqs = [
        RequestSpec(rid=i, arrival_s=a, prompt_tokens=p, output_tokens=o)
        for i, (a, p, o) in enumerate(
            zip(arrival.tolist(), prompt_tokens.tolist(), output_tokens.tolist(), strict=True)
        )
    ]
    if prompts is not None:
        for r, text in zip(reqs, prompts, strict=True):
            r.prompt = text
    return reqs, meta


def offered_rate(workload: Workload) -> float:
    """Mean arrival rate in requests per second over the workload's arrival span."""
    reqs = workload.requests
    if len(reqs) < 2:
        return 0.0
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    return (len(reqs) - 1) / span if span > 0 else float("inf")


def check_token_columns(prompt_tokens: np.ndarray, output_tokens: np.ndarray, source: str) -> None:
    for name, col in (("prompt", prompt_tokens), ("output", output_tokens)):
        bad = np.flatnonzero(col < (0 if name == "prompt" else 1))
        if len(bad):
            raise LlmplanError(
                f"{source}: row {int(bad[0]) + 1} has {name} tokens {int(col[bad[0]])} "
                f"({len(bad)} such rows); {name} token counts must be >= {0 if name == 'prompt' else 1}"
            )


def rescale_rate(workload: Workload, factor: float) -> Workload:
    """A copy of ``workload`` whose arrivals come ``factor`` times faster (same requests, same SLOs;
    closed-loop sessions' think times shrink by the same factor)."""
    if factor <= 0 or not np.isfinite(factor):
        raise LlmplanError(f"rate factor must be a positive number, got {factor}")
    from dataclasses import replace

    reqs = [replace(r, arrival_s=r.arrival_s / factor, think_s=r.think_s / factor) for r in workload.requests]
    meta = dict(workload.meta, rate_scale=workload.meta.get("rate_scale", 1.0) * factor)
    return Workload(workload.name, reqs, workload.source, meta)
