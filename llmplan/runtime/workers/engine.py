"""``build_engine(workers=N)``: the serving core over a :class:`PipelineExecutor`.

The same Scheduler, batch policy, LLMEngine and AsyncLLMEngine as the single-process engine
(:mod:`llmplan.runtime.factory`); only the executor differs, and rank 0's share of the
model is built by the executor rather than here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

log = logging.getLogger(__name__)


def used_blocks(scheduler) -> list[int]:
    """KV blocks of the sequences the scheduler holds (the rows a layer migration must carry).

    Called from the admin thread too: copying the lists is atomic under the GIL, and a stale read
    only adds a block that is free by now (moved for nothing) or misses one allocated since
    (which holds no KV until the next step, and steps wait for the migration)."""
    seqs = list(scheduler.running) + list(scheduler.waiting)
    return sorted({b for s in seqs for b in list(s.block_ids)})


def build_pipeline_engine(
    *,
    workers: int,
    layer_split: str | Sequence[int] | None = None,
    migration_controller: bool = False,
    control_interval_s: float = 1.0,
    worker_timeout_s: float = 120.0,
    worker_memory_gb: float | None = None,
    model: str | Path | None = None,
    dummy_weights: str | None = None,
    plan: Any = None,
    scheduler: str | Any = "fcfs",
    max_num_seqs: int = 64,
    num_kv_blocks: int | None = None,
    block_size: int = 16,
    device: str = "cpu",
    dtype: str = "float32",
    max_queue: int = 1024,
    seed: int = 0,
    max_num_batched_tokens: int = 512,
    chunked_prefill: bool = True,
    max_model_len: int | None = None,
    kv_cache_gb: float | None = None,
    predictor: Any = None,
    served_model_name: str | None = None,
    threads: int | None = None,
    misprediction_log: str | Path | None = None,
):
    import torch

    from llmplan.runtime.engine.parts import (
        assemble_engine,
        check_policy,
        default_num_blocks,
        kv_capped_context,
        make_recorder,
        make_scheduler,
        resolve_dtype,
        served_context,
    )
    from llmplan.runtime.workers.executor import PipelineExecutor
    from llmplan.runtime.workers.stage import StageSource
    from llmplan.runtime.workers.stages import resolve_split

    if (model is None) == (dummy_weights is None):
        raise LlmplanError("give exactly one of --model PATH (a local HF directory) or --dummy-weights NAME")
    source = StageSource(dummy_weights=dummy_weights, model_dir=str(model) if model else None, seed=seed,
                         dtype=dtype, block_size=block_size, device=device)
    cfg = source.config()
    ranges = resolve_split(cfg.num_layers, workers, layer_split, plan)
    torch_dtype = resolve_dtype(dtype)
    policy = check_policy(scheduler, predictor)
    if threads is not None:
        torch.set_num_threads(threads)
    served_len = served_context(cfg.max_model_len, max_model_len, getattr(cfg, "name", "the model"))
    if num_kv_blocks is None:
        num_kv_blocks = default_num_blocks(cfg, block_size, torch_dtype, [torch.device(device)],
                                            max_num_seqs, served_len, kv_cache_gb)
    source.num_blocks = num_kv_blocks
    served_len = kv_capped_context(served_len, max_model_len, num_kv_blocks, block_size)
    sch = make_scheduler(policy, num_kv_blocks, block_size, max_num_seqs, max_num_batched_tokens,
                         chunked_prefill, served_len)
    recorder = make_recorder(misprediction_log, predictor)
    if worker_memory_gb is not None and worker_memory_gb <= 0:
        raise LlmplanError(f"--worker-memory-gb must be > 0 (got {worker_memory_gb})")
    executor = PipelineExecutor(source, ranges, blocks_in_use=lambda: used_blocks(sch),
                                timeout_s=worker_timeout_s, worker_threads=threads,
                                capacity_bytes=worker_memory_gb * 2**30 if worker_memory_gb else None)
    if migration_controller:
        from llmplan.migrate.controller import ControllerConfig, MigrationController

        sync = max(s for _, s in executor.links.values())
        ctl = MigrationController(ControllerConfig(period_s=control_interval_s, sync_s=sync),
                                  bandwidth=executor.bandwidth)
        executor.enable_controller(ctl, control_interval_s)
    engine, _ = assemble_engine(
        cfg, executor, sch, model=model, dummy_weights=dummy_weights, served_model_name=served_model_name,
        max_model_len=served_len, seed=seed, predictor=predictor, recorder=recorder, max_queue=max_queue,
        collectors=executor.collectors(),
    )  # fmt: skip
    log.info("engine: %s (%s, %d layers) over %d workers %s on %s, %d KV blocks x %d tokens, scheduler %s%s",
             engine.model_name, dtype, cfg.num_layers, workers, ranges, device, num_kv_blocks, block_size,
             policy.name,
             f", migration controller every {control_interval_s:g} s" if migration_controller else "")
    return engine
