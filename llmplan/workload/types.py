"""What a workload is: requests with arrival times, token counts and SLOs.

These types are the contract between workload loaders (traces, synthetic), the batch
policies, the simulator, the live bench client and the metrics. Times are seconds
relative to the start of the workload.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SLO:
    """Per-request latency targets in seconds; ``None`` means no target of that kind."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None


@dataclass(slots=True)
class RequestSpec:
    """One request of a workload.

    ``output_tokens`` is the true number of tokens the request generates (from the trace).
    Only oracle predictors and the simulator's stop rule may read it; learned predictors
    see ``prompt`` (text, when the source has it) and ``prompt_tokens``.
    """

    rid: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    prompt: str | None = None
    slo: SLO = field(default_factory=SLO)
    task: str | None = None
    # Requests sharing a prefix (system prompt, multi-turn history) carry the same
    # prefix_id and the number of shared leading tokens; used by prefix-aware routing
    # and the global KV store in simulation.
    prefix_id: int | None = None
    prefix_tokens: int = 0
    # The prompt's exact token ids (a numpy int32 array) when the workload has them
    # (shared-prefix, sharegpt-multiturn): the simulator's prefix cache hashes these blocks and
    # the load generator sends these ids.
    token_ids: Any = None
    # Closed-loop sessions (sharegpt-multiturn): this request is sent ``think_s`` seconds after
    # request ``follows`` (the session's previous turn) has finished, on whichever clock runs the
    # workload (the simulator's virtual one, the load generator's wall clock); ``arrival_s`` is
    # then only a nominal time (used to order and cut the workload). None: sent at ``arrival_s``.
    follows: int | None = None
    think_s: float = 0.0


@dataclass(slots=True)
class Workload:
    name: str
    requests: list[RequestSpec]
    source: str = ""
    # Free-form provenance: file path, sha256, tokenizer name, rate scale, window, seed.
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.requests)
