"""Size the planner's KV reserve from a resource profile's memory prediction.

The profile predicts each request's peak memory on the deployment it was collected on; the
part above the idle footprint (``ResourceProfiler.memory_floor_mb``) is what one request adds:
its KV cache plus activations. The planner reserves, per concurrent request, a high quantile of
that increment over a sample of the expected prompts, converted to KV tokens of the planned
model, so ``max_batch`` requests of the predicted mix fit. It only transfers when the profile
was collected serving the same model and dtype as the plan's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.profile.profiler import ResourceProfiler, predict_memory_mb

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class KvReserve:
    per_request_mb: float  # the quantile of predicted peak memory above the floor
    floor_mb: float
    quantile: float
    prompts: int

    def tokens_per_request(self, kv_bytes_per_token: float) -> int:
        return max(1, int(np.ceil(self.per_request_mb * MIB / kv_bytes_per_token)))


def kv_reserve_from_profile(
    profile: str | Path | ResourceProfiler,
    prompts: list[str],
    *,
    tasks: list[str | None] | None = None,
    output_tokens_est: list[int] | None = None,
    quantile: float = 0.9,
) -> KvReserve:
    if not prompts:
        raise LlmplanError("the KV reserve needs at least one sample prompt; pass --kv-prompts FILE.jsonl")
    if not 0.0 < quantile <= 1.0:
        raise LlmplanError(f"--kv-quantile must be in (0, 1] (got {quantile})")
    prof = profile if isinstance(profile, ResourceProfiler) else ResourceProfiler.load(profile)
    peaks = np.asarray(
        predict_memory_mb(prof, prompts, tasks=tasks, output_tokens_est=output_tokens_est, kind="max")
    )
    floor = getattr(prof, "memory_floor_mb", None)
    if floor is None:  # profiles fitted before the floor was recorded
        floor = float(peaks.min())
    increments = np.clip(peaks - floor, 0.0, None)
    per_request = float(np.quantile(increments, quantile))
    if per_request <= 0.0:
        raise LlmplanError(
            f"the profile predicts no memory above its idle floor ({floor:.0f} MiB) for these prompts; "
            "re-collect it on an otherwise idle device (`llmplan profile collect --sampler nvml`) or size "
            "the reserve with --input-len/--output-len"
        )
    return KvReserve(per_request, float(floor), quantile, len(prompts))
