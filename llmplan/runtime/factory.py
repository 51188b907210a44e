"""The runtime's composition root: :func:`build_engine` assembles an engine from an :class:`EngineConfig`.

One process: model + weights + paged KV pool + the core's Scheduler + policy, over the plain
torch executor or (``kv_store``) the KV-store executor of :mod:`llmplan.kvstore.serving`;
``workers`` > 1: :func:`llmplan.runtime.workers.engine.build_pipeline_engine`. It sits one layer
above :mod:`llmplan.runtime.engine`, :mod:`llmplan.runtime.workers` and :mod:`llmplan.kvstore`,
which therefore never import each other through it (docs/architecture.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmplan.deployment import EngineArgs
from llmplan.errors import LlmplanError
from llmplan.runtime.engine.async_engine import AsyncLLMEngine
from llmplan.runtime.engine.config import ModelConfig, catalog_config, load_hf_config
from llmplan.runtime.engine.executor import TorchExecutor
from llmplan.runtime.engine.kvcache import PagedKVCache
from llmplan.runtime.engine.loader import init_dummy_weights, load_hf_weights
from llmplan.runtime.engine.model import LlamaModel

# resolve_policy and served_context are re-exported: callers import them from here.
from llmplan.runtime.engine.parts import (
    assemble_engine,
    check_policy,
    default_num_blocks,
    kv_capped_context,
    make_recorder,
    make_scheduler,
    resolve_dtype,
)
from llmplan.runtime.engine.parts import resolve_policy as resolve_policy
from llmplan.runtime.engine.parts import served_context as served_context
from llmplan.runtime.engine.placement import layer_devices_from_plan

log = logging.getLogger(__name__)


def build_model(
    model: str | Path | None = None,
    dummy_weights: str | None = None,
    plan: Any = None,
    device: str = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
) -> tuple[ModelConfig, LlamaModel]:
    if (model is None) == (dummy_weights is None):
        raise LlmplanError("give exactly one of --model PATH (a local HF directory) or --dummy-weights NAME")
    cfg = load_hf_config(model) if model is not None else catalog_config(str(dummy_weights))
    torch_dtype = resolve_dtype(dtype)
    devices = layer_devices_from_plan(plan, cfg.num_layers, device)
    weight_bytes = cfg.num_params() * torch.empty((), dtype=torch_dtype).element_size()
    if all(d.type == "cpu" for d in devices):
        try:
            import psutil

            avail = psutil.virtual_memory().available
            if weight_bytes > 0.9 * avail:
                raise LlmplanError(
                    f"{cfg.name} needs {weight_bytes / 2**30:.1f} GiB for weights in {torch_dtype} but only "
                    f"{avail / 2**30:.1f} GiB of RAM is free; use a smaller model or bfloat16"
                )
        except ImportError:
            pass
    m = LlamaModel(cfg, devices, torch_dtype)
    if model is not None:
        load_hf_weights(m, model)
    else:
        init_dummy_weights(m, seed=seed)
    return cfg, m


_ARG_FIELDS = ("max_num_seqs", "max_num_batched_tokens", "chunked_prefill", "block_size", "max_model_len")


@dataclass(slots=True)
class EngineConfig:
    """Everything :func:`build_engine` needs: the scheduler settings (:class:`EngineArgs`, the
    flags ``serve`` and ``bench`` share) plus the model, device, KV pool and server knobs."""

    model: str | Path | None = None
    dummy_weights: str | None = None
    plan: Any = None
    args: EngineArgs = field(default_factory=EngineArgs)
    policy_object: Any = None  # a BatchPolicy object instead of args.policy (library use)
    num_kv_blocks: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_queue: int = 1024
    seed: int = 0
    kv_cache_gb: float | None = None
    predictor: Any = None
    served_model_name: str | None = None
    threads: int | None = None
    # "none", "auto" or a CPU list ("0-1"): pin the engine thread's intra-op threads one per CPU
    # (native.parse_cpus); a list with threads=None sets threads to its length.
    cpu_bind: str = "none"
    # Multi-worker instances (llmplan.runtime.workers): layers over `workers` processes.
    workers: int = 1
    layer_split: str | list[int] | None = None
    migration_controller: bool = False
    control_interval_s: float = 1.0
    worker_timeout_s: float = 120.0
    worker_memory_gb: float | None = None
    misprediction_log: str | Path | None = None
    kv_store: str | Path | None = None
    kv_store_memory_mb: int = 1024
    kv_store_disk_gb: float | None = None
    kv_store_schedule_hits: bool = False
    # GPU-resident prefix cache in the block manager (vLLM automatic prefix caching); the
    # global KV store, when given, is the tier below it (probed only on a GPU-cache miss).
    enable_prefix_caching: bool = False

    @classmethod
    def from_kwargs(cls, **kw: Any) -> EngineConfig:
        """The keyword form (``build_engine(dummy_weights=..., max_num_seqs=16)``): the scheduler
        settings go to :class:`EngineArgs`; ``scheduler`` is the policy's name or object."""
        args = {k: kw.pop(k) for k in _ARG_FIELDS if k in kw}
        pol = kw.pop("scheduler", kw.pop("policy", None))
        policy_object = None
        if pol is not None and not isinstance(pol, str):
            policy_object = pol
        elif pol is not None:
            args["policy"] = pol
        return cls(args=EngineArgs(**args), policy_object=policy_object, **kw)

    @property
    def policy(self) -> Any:
        return self.policy_object if self.policy_object is not None else self.args.policy

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`llmplan.runtime.workers.engine.build_pipeline_engine`."""
        a = self.args
        return dict(
            workers=self.workers,
            layer_split=self.layer_split,
            migration_controller=self.migration_controller,
            control_interval_s=self.control_interval_s,
            worker_timeout_s=self.worker_timeout_s,
            worker_memory_gb=self.worker_memory_gb,
            model=self.model,
            dummy_weights=self.dummy_weights,
            plan=self.plan,
            scheduler=self.policy,
            max_num_seqs=a.max_num_seqs,
            num_kv_blocks=self.num_kv_blocks,
            block_size=a.block_size,
            device=self.device,
            dtype=self.dtype,
            max_queue=self.max_queue,
            seed=self.seed,
            max_num_batched_tokens=a.max_num_batched_tokens,
            chunked_prefill=a.chunked_prefill,
            max_model_len=a.max_model_len,
            kv_cache_gb=self.kv_cache_gb,
            predictor=self.predictor,
            served_model_name=self.served_model_name,
            threads=self.threads,
            misprediction_log=self.misprediction_log,
        )


def build_engine(config: EngineConfig | None = None, /, **kwargs: Any) -> AsyncLLMEngine:
    """An :class:`~llmplan.runtime.engine.api.AsyncEngine` running the torch model, built from
    an :class:`EngineConfig` (or its fields as keywords; see :meth:`EngineConfig.from_kwargs`).
    The engine carries the :class:`~llmplan.deployment.DeploymentSpec` it runs as
    ``engine.deployment`` (what ``GET /v1/deployment`` shows).

    ``scheduler`` names a batch policy of ``llmplan.batch`` (or is a policy object);
    ``predictor`` is a :class:`~llmplan.predict.interface.LengthPredictor` for the policies
    that use predicted lengths. ``max_num_batched_tokens`` is the per-step token budget that
    chunked prefill splits long prompts against. ``threads`` sets torch's CPU threads (process
    wide); on a CPU shared with other work, 1 is often faster than all cores. ``cpu_bind``
    (``"none"``, ``"auto"`` or a CPU list like ``"0-1"``) pins the engine thread's intra-op threads
    one per CPU when it starts (:func:`llmplan.runtime.engine.native.bind_threads`).
    ``misprediction_log`` (with a predictor) appends (prompt, actual length) of every request
    whose length bucket was mispredicted to a JSONL file, for ``llmplan predict update``.
    ``kv_store`` (a directory, or ``"memory"``) puts the global KV cache store in the prefill
    path (``llmplan.kvstore.serving``): cached prompt prefixes are loaded layer by layer instead
    of computed, new full blocks are written back; processes sharing a directory share blocks.
    ``kv_store_memory_mb`` is its memory tier, ``kv_store_disk_gb`` caps its disk tier (LRU files;
    ``None``: no cap). ``kv_store=None`` (default): no store. ``kv_store_schedule_hits`` lets
    admission ask the store for a prompt's cached prefix, so only the uncached rest is scheduled
    and budgeted against ``max_num_batched_tokens`` (vLLM's ``num_computed_tokens``); without it
    the budget chunks the whole prompt and hits are found inside the chunks.
    """
    if config is None:
        config = EngineConfig.from_kwargs(**kwargs)
    elif kwargs:
        raise TypeError("build_engine takes an EngineConfig or keywords, not both")
    c, a = config, config.args
    if c.threads is not None and c.threads < 1:
        raise LlmplanError(f"threads must be >= 1 (got {c.threads})")
    if a.max_num_seqs < 1 or c.max_queue < 0 or a.block_size < 1 or a.max_num_batched_tokens < 1:
        raise LlmplanError("max_num_seqs, block_size and max_num_batched_tokens must be >= 1, max_queue >= 0")
    from llmplan.runtime.engine import native

    cpus = native.parse_cpus(c.cpu_bind, c.threads)
    threads = c.threads if c.threads is not None else len(cpus) if cpus else torch.get_num_threads()
    if str(c.device).startswith("cpu") or cpus:
        native.state()  # build the decode kernel now, or refuse LLMPLAN_DECODE_KERNEL, not in a step
    multi = c.workers != 1 or c.layer_split is not None or c.migration_controller
    # The build runs on this thread with one intra-op thread, the steps on the engine thread with
    # ``threads`` (AsyncLLMEngine.threads). libgomp keeps one pool of worker threads per thread
    # that ever ran a parallel region, and once it manages more threads than there are CPUs it
    # stops spinning at barriers: a build with N threads here left the engine thread's pool
    # throttled, 142 vs 250 out tok/s on issue 23's decode-heavy workload at 2 threads.
    torch.set_num_threads(1)
    try:
        if multi or c.worker_memory_gb is not None:
            engine = _pipeline_engine(c)
        else:
            engine = _single_engine(c)
    finally:
        torch.set_num_threads(threads)  # callers that step the engine on this thread get them
    engine.threads = threads
    engine.cpu_bind = cpus
    engine.deployment = engine_deployment(c, engine)
    return engine


def engine_deployment(c: EngineConfig, engine: Any) -> dict[str, Any]:
    """The spec of a built engine, from what it actually runs (the scheduler's settings, the
    KV pool, the context it enforces), for ``GET /v1/deployment``."""
    from llmplan.deployment import DeploymentSpec, InstanceSpec, StageSpec

    sched = getattr(getattr(engine, "engine", None), "scheduler", None)
    sc = getattr(sched, "config", None)
    policy = getattr(getattr(sched, "policy", None), "name", None) or str(getattr(c.policy, "name", c.policy))
    args = EngineArgs(
        policy=policy,
        max_num_seqs=getattr(sc, "max_num_seqs", c.args.max_num_seqs),
        max_num_batched_tokens=getattr(sc, "max_num_batched_tokens", c.args.max_num_batched_tokens),
        chunked_prefill=bool(getattr(sc, "chunked_prefill", c.args.chunked_prefill)),
        block_size=getattr(sc, "block_size", c.args.block_size),
        max_model_len=int(engine.max_model_len),
    )
    cfg = getattr(getattr(engine, "engine", None), "cfg", None)
    layers = int(getattr(cfg, "num_layers", 0) or 0)
    device = "cpu" if str(c.device).startswith("cpu") and c.plan is None else _gpu_name(c.device)
    model = str(c.dummy_weights) if c.dummy_weights else str(c.model)
    stages = [StageSpec([str(c.device)], 0, layers)] if layers else []
    inst = InstanceSpec(
        "i0", "both", stages, tp=1, pp=max(1, c.workers),
        num_kv_blocks=getattr(sc, "num_blocks", c.num_kv_blocks),
    )  # fmt: skip
    spec = DeploymentSpec(
        model=model, instances=[inst], weight_dtype=str(resolve_dtype(c.dtype)).removeprefix("torch."),
        device=device, engine=args, kv_store=None if c.kv_store is None else str(c.kv_store),
        serving_engine="llmplan", source="llmplan serve",
    )  # fmt: skip
    return spec.to_dict()


def _gpu_name(device: str) -> str:
    try:
        return torch.cuda.get_device_name(torch.device(device))
    except Exception:  # noqa: BLE001 - no CUDA: name the device as given
        return str(device)


def _single_engine(c: EngineConfig) -> AsyncLLMEngine:
    a = c.args
    model, dummy_weights, plan, device = c.model, c.dummy_weights, c.plan, c.device
    dtype, seed = c.dtype, c.seed
    max_model_len, num_kv_blocks, block_size = a.max_model_len, c.num_kv_blocks, a.block_size
    max_num_seqs, kv_cache_gb, kv_store = a.max_num_seqs, c.kv_cache_gb, c.kv_store
    scheduler, predictor = c.policy, c.predictor
    cfg, m = build_model(model, dummy_weights, plan, device, dtype, seed)
    policy = check_policy(scheduler, predictor)
    served_len = served_context(cfg.max_model_len, max_model_len, cfg.name)
    if num_kv_blocks is None:
        num_kv_blocks = default_num_blocks(
            cfg, block_size, m.dtype, m.layer_devices, max_num_seqs, served_len, kv_cache_gb
        )
    kv = PagedKVCache(cfg, num_kv_blocks, block_size, m.layer_devices, m.dtype)
    served_len = kv_capped_context(served_len, max_model_len, num_kv_blocks, block_size)
    executor, collectors = _executor(
        m, kv, kv_store, c.kv_store_memory_mb, c.kv_store_disk_gb, model, dummy_weights, seed
    )
    # The store's executor tells admission which prompt prefix it can load, so only the rest is
    # scheduled and budgeted against max_num_batched_tokens (vLLM's num_computed_tokens).
    probe = executor.prefix_probe if c.kv_store_schedule_hits and kv_store else None
    sch = make_scheduler(policy, num_kv_blocks, block_size, max_num_seqs, a.max_num_batched_tokens,
                         a.chunked_prefill, served_len, prefix_probe=probe,
                         prefix_caching=c.enable_prefix_caching)
    recorder = make_recorder(c.misprediction_log, predictor)
    engine, tok = assemble_engine(
        cfg, executor, sch, model=model, dummy_weights=dummy_weights, served_model_name=c.served_model_name,
        max_model_len=served_len, seed=seed, predictor=predictor, recorder=recorder, max_queue=c.max_queue,
        collectors=collectors,
    )  # fmt: skip
    log.info(
        "engine: %s (%s, %d layers) on %s, %d KV blocks x %d tokens (%.0f MiB), scheduler %s, tokenizer %s",
        engine.model_name,
        dtype,
        cfg.num_layers,
        sorted({str(d) for d in m.layer_devices}),
        num_kv_blocks,
        block_size,
        kv.nbytes() / 2**20,
        policy.name,
        getattr(tok, "name", type(tok).__name__),
    )
    return engine


def _executor(
    m, kv, kv_store, kv_store_memory_mb, kv_store_disk_gb, model, dummy_weights, seed
) -> tuple[TorchExecutor, list]:
    """The plain torch executor, or the KV-store executor and its metrics collector."""
    if kv_store is None:
        return TorchExecutor(m, kv), []
    from llmplan.kvstore.metrics import StoreCollector
    from llmplan.kvstore.serving import build_store_executor

    weights = f"dummy:{dummy_weights}:seed={seed}" if dummy_weights else str(Path(str(model)).expanduser())
    ex = build_store_executor(m, kv, kv_store, kv_store_memory_mb, weights, kv_store_disk_gb)
    log.info("KV store: %s (memory tier %d MiB), namespace %s", kv_store, kv_store_memory_mb, ex.namespace)
    return ex, [StoreCollector(ex.store, ex.stats)]


def _pipeline_engine(c: EngineConfig) -> AsyncLLMEngine:
    """``workers`` > 1: the same serving core over a multi-worker PipelineExecutor."""
    if c.workers < 2:
        raise LlmplanError("--layer-split, --migration-controller and --worker-memory-gb need --workers 2 "
                           "or more")
    if c.kv_store is not None:
        raise LlmplanError("--kv-store serves single-worker instances; drop it or use --workers 1")
    from llmplan.runtime.workers.engine import build_pipeline_engine

    return build_pipeline_engine(**c.pipeline_kwargs())
