"""What a run produces: one record per request and per-instance samples over time.

Both the simulator and the live bench client fill these; metrics and reports read
only these, so the two clocks produce comparable numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llmplan.workload.types import SLO

Status = Literal["ok", "rejected", "failed"]


@dataclass(slots=True)
class RequestRecord:
    """Timestamps are absolute on the run's clock (seconds, same origin as arrival_s)."""

    rid: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int  # tokens actually generated
    slo: SLO = field(default_factory=SLO)
    status: Status = "ok"
    reason: str | None = None  # why rejected/failed; None when ok
    instance: str | None = None
    first_scheduled_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0
    # Per-token emission times (first token included) when recorded; ITL comes from these.
    token_times_s: list[float] | None = None
    predicted_output_tokens: int | None = None

    @property
    def queueing_s(self) -> float | None:
        return None if self.first_scheduled_s is None else self.first_scheduled_s - self.arrival_s

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float | None:
        return None if self.finish_s is None else self.finish_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time per output token after the first (vLLM's definition)."""
        if self.finish_s is None or self.first_token_s is None or self.output_tokens < 2:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)


@dataclass(slots=True)
class InstanceSample:
    """A sample of one instance's state; the simulator takes one per iteration or per tick."""

    t_s: float
    instance: str
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    busy_frac: float  # share of the last interval the instance was computing (0..1)


@dataclass(slots=True)
class RunResult:
    records: list[RequestRecord]
    samples: list[InstanceSample] = field(default_factory=list)
    # Counters such as preemptions, padding_tokens, migrations; plus the full config.
    counters: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
