"""Per-request SLO assignment: fixed, proportional to length, or UELLM's random deadlines.

A spec string keeps the CLI and report config in one place, e.g.
``fixed:ttft=2,tpot=0.1,e2e=60``, ``proportional:a=0.5,b=0.001,tpot=0.1,slack=1.0``,
``uellm:lo=1,hi=350`` or ``none``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.workload.types import SLO, Workload

# Defaults sized for a 13B model on A100s, close to DistServe's chatbot setting
# (TTFT 0.25 s, TPOT 0.1 s) but with a length term so long prompts are not doomed.
_DEFAULTS: dict[str, dict[str, float]] = {
    "none": {},
    "fixed": {"ttft": 2.0, "tpot": 0.1, "e2e": 60.0},
    "proportional": {"a": 0.5, "b": 0.001, "tpot": 0.1, "slack": 1.0},
    # UELLM (Zhang et al.): end-to-end deadlines drawn uniformly from 1 to 350 s.
    "uellm": {"lo": 1.0, "hi": 350.0},
}


@dataclass(frozen=True, slots=True)
class SLOSpec:
    kind: str
    params: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        return self.kind + ":" + ",".join(f"{k}={v:g}" for k, v in self.params.items())


def parse_slo_spec(spec: str) -> SLOSpec:
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in _DEFAULTS:
        raise LlmplanError(
            f"unknown SLO kind {kind!r}; use one of {', '.join(_DEFAULTS)} "
            "(e.g. --slo fixed:ttft=2,tpot=0.1,e2e=60)"
        )
    params = dict(_DEFAULTS[kind])
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in params:
            raise LlmplanError(
                f"bad SLO parameter {item!r} for {kind!r}; allowed keys: {', '.join(params) or 'none'} "
                f"(e.g. {kind}:{','.join(f'{k}={v:g}' for k, v in _DEFAULTS[kind].items())})"
            )
        try:
            params[key] = float(value)
        except ValueError:
            raise LlmplanError(
                f"SLO parameter {key}={value!r} is not a number; write e.g. {key}=0.5"
            ) from None
        if not 0 <= params[key] < float("inf"):
            raise LlmplanError(
                f"SLO parameter {key}={value} is negative or not finite; SLO values are seconds >= 0"
            )
    if kind == "uellm" and params["hi"] < params["lo"]:
        raise LlmplanError(f"uellm SLO needs lo <= hi, got lo={params['lo']:g} hi={params['hi']:g}")
    return SLOSpec(kind, params)


def assign_slos(workload: Workload, spec: SLOSpec | str, *, seed: int = 0) -> Workload:
    """Set every request's SLO in place (and return the workload) per ``spec``."""
    if isinstance(spec, str):
        spec = parse_slo_spec(spec)
    p = spec.params
    reqs = workload.requests
    if spec.kind == "none":
        for r in reqs:
            r.slo = SLO()
    elif spec.kind == "fixed":
        slo = SLO(ttft_s=p["ttft"] or None, tpot_s=p["tpot"] or None, e2e_s=p["e2e"] or None)
        for r in reqs:
            r.slo = slo
    elif spec.kind == "proportional":
        for r in reqs:
            ttft = p["a"] + p["b"] * r.prompt_tokens
            r.slo = SLO(ttft_s=ttft, tpot_s=p["tpot"], e2e_s=ttft + r.output_tokens * p["tpot"] * p["slack"])
    else:  # uellm
        # Own generator keyed on the seed so the deadlines do not depend on how many random
        # numbers the arrival process drew.
        rng = np.random.default_rng([seed, 0x510])
        deadlines = rng.uniform(p["lo"], p["hi"], size=len(reqs))
        for r, d in zip(reqs, deadlines, strict=True):
            r.slo = SLO(e2e_s=float(d))
    workload.meta["slo"] = str(spec)
    return workload
