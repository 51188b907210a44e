"""Per-step engine overhead by serving engine: the time a step costs outside the GPU kernels.

Only exposed overhead counts (CPU work the GPU waits for). Measured vs estimated, per entry:

* ``llmplan`` (built-in): 0.1 ms, **measured** on this project's shared CPU by
  ``benchmarks/engine_overhead.py`` (intercept of step time vs decoder layers at decode batch 1;
  noisy, the batch-8 fit was unusable under contention). Scheduler bookkeeping excluded.
* ``vllm``: 1.0 ms, **estimate** (llmplan's previous default). vLLM blog, 2024-09-05, "vLLM v0.6.0:
  2.7x Throughput Improvement and 5x Latency Reduction": on Llama-3-8B / one H100, v0.5.3 spent 33 %
  of the time in the HTTP server and 29 % in scheduling; v0.6 hides much of it (multi-step
  scheduling, asynchronous output processing).
* ``sglang``: 0.1 ms, **estimate**. SGLang v0.4 blog (LMSYS, 2024-12-04), "zero-overhead batch
  scheduler": the CPU schedules one batch ahead; Nsight shows no GPU idle time between consecutive
  decode batches (Triton backend).
* ``trtllm`` (TensorRT-LLM; ``tensorrt-llm`` is accepted): 0.1 ms, **estimate**. TensorRT-LLM
  docs, "Overlap Scheduler" (on by default: the CPU work of step n runs while the GPU computes
  step n+1); C++ runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmplan.errors import LlmplanError
from llmplan.registry import Registry, lowered


@dataclass(frozen=True, slots=True)
class EngineOverhead:
    engine: str
    per_step_s: float
    measured: bool
    source: str


ENGINES: dict[str, EngineOverhead] = {
    e.engine: e
    for e in (
        EngineOverhead(
            "llmplan", 1e-4, True, "benchmarks/engine_overhead.py on the project's shared CPU (batch 1)"
        ),
        EngineOverhead(
            "vllm", 1e-3, False, "vLLM blog 2024-09-05 (v0.6.0 perf update); llmplan's previous default"
        ),
        EngineOverhead(
            "sglang", 1e-4, False, "SGLang v0.4 blog, LMSYS 2024-12-04 (zero-overhead batch scheduler)"
        ),
        EngineOverhead("trtllm", 1e-4, False, "TensorRT-LLM docs: Overlap Scheduler (default on)"),
    )
}
ALIASES = {"tensorrt-llm": "trtllm", "tensorrt_llm": "trtllm", "tensorrtllm": "trtllm", "builtin": "llmplan"}
# What each command models unless told otherwise: ``plan`` prints a ``vllm serve`` line and the
# simulator reproduces vLLM V1's scheduler (chunked prefill, 256 sequences, 8192-token budget).
DEFAULT_ENGINE = "vllm"


SERVING_ENGINES: Registry[EngineOverhead] = Registry(
    "serving engine", ENGINES, aliases=ALIASES, normalize=lowered, sort=False
)


def canonical_engine(engine: str, flag: str = "--serving-engine") -> str:
    """``"TensorRT-LLM"`` -> ``"trtllm"``; an unknown name is refused in one line naming the
    choices and the option (``flag``) it was given to."""
    if str(engine) not in SERVING_ENGINES:
        raise LlmplanError(f"{flag} {engine!r} is unknown; use one of {'|'.join(SERVING_ENGINES.names())}")
    return SERVING_ENGINES.key(str(engine))


def engine_overhead(engine: str) -> EngineOverhead:
    return ENGINES[canonical_engine(engine)]


def describe(engine: str) -> dict[str, object]:
    """The engine as reports record it: name, per-step overhead, measured or estimated, source."""
    e = engine_overhead(engine)
    return {"serving_engine": e.engine, "per_step_overhead_s": e.per_step_s, "measured": e.measured,
            "source": e.source}  # fmt: skip
