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
* ``tensorrt-llm``: 0.1 ms, **estimate**. TensorRT-LLM docs, "Overlap Scheduler" (on by default: the
  CPU work of step n runs while the GPU computes step n+1); C++ runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmplan.errors import LlmplanError


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
        EngineOverhead("tensorrt-llm", 1e-4, False, "TensorRT-LLM docs: Overlap Scheduler (default on)"),
    )
}


def engine_overhead(engine: str) -> EngineOverhead:
    try:
        return ENGINES[engine.lower()]
    except KeyError:
        raise LlmplanError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}") from None


def params_for_engine(engine: str, base=None):  # noqa: ANN001, ANN201 - CostParams, imported lazily
    """``CostParams`` whose per-iteration overhead is the engine's."""
    import dataclasses

    from llmplan.plan.costmodel import DEFAULT_PARAMS

    return dataclasses.replace(
        base or DEFAULT_PARAMS, iteration_overhead_s=engine_overhead(engine).per_step_s
    )
