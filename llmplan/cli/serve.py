"""`llmplan serve`: Run the instrumented engine behind an OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path

import typer

from llmplan.cli.engine_args import (
    block_size_option,
    chunked_prefill_option,
    config_option,
    max_model_len_option,
    max_num_batched_tokens_option,
    max_num_seqs_option,
    policy_option,
    scheduler_alias_option,
)
from llmplan.roles import role_label

HELP = """Run the built-in torch engine behind an OpenAI-compatible HTTP API.

Endpoints: POST /v1/completions and /v1/chat/completions (SSE with "stream": true),
GET /v1/models, /health and /metrics (Prometheus). SIGTERM or Ctrl-C drains: requests in
flight finish, new ones get 503, then the process exits 0.

Examples:

  llmplan serve --dummy-weights llama-tiny --port 8000          # random weights, CPU, seconds to start

  llmplan serve --model ~/models/Qwen2-0.5B --device cuda --dtype bfloat16

  llmplan serve --dummy-weights llama-120m --policy slo-odbs --predictor noisy:0.8

  llmplan serve --dummy-weights llama-tiny --workers 2 --layer-split 3,1 --migration-controller
"""


def _predictor(spec: str | None, seed: int):
    if spec is None:
        return None
    if Path(spec).expanduser().is_dir():
        from llmplan.predict.learned import LearnedLengthPredictor

        return LearnedLengthPredictor(Path(spec).expanduser())
    from llmplan.predict.oracle import parse_predictor

    return parse_predictor(spec, seed=seed)


def register(app: typer.Typer) -> None:
    @app.command("serve", help=HELP, no_args_is_help=False)
    def serve(
        model: Path | None = typer.Option(
            None,
            "--model",
            help="Local Hugging Face model directory (config.json + safetensors).",
            rich_help_panel="Model",
        ),
        dummy_weights: str | None = typer.Option(
            None,
            "--dummy-weights",
            help="Random weights for a catalog config (llama-tiny, llama-120m, ...), for benchmarks.",
            rich_help_panel="Model",
        ),
        served_model_name: str | None = typer.Option(
            None,
            "--served-model-name",
            help="Model id clients send and /v1/models lists.",
            rich_help_panel="Model",
        ),
        device: str = typer.Option(
            "cpu", "--device", help="cpu, cuda or cuda:N (without --plan).", rich_help_panel="Model"
        ),
        dtype: str = typer.Option(
            "float32", "--dtype", help="float32, bfloat16 or float16.", rich_help_panel="Model"
        ),
        clock_control: str | None = typer.Option(
            None,
            "--clock-control",
            help="greenserve: lock the GPU's SM clock per iteration (EcoFreq, docs/energy.md) through NVML; "
            "needs --device cuda and permission to lock clocks (refusals are reported, then it stays off).",
            rich_help_panel="Model",
        ),
        plan: Path | None = typer.Option(
            None,
            "--plan",
            help="Plan JSON whose device map places the layers (from `llmplan plan --json`).",
            rich_help_panel="Model",
        ),
        seed: int = typer.Option(
            0, "--seed", help="Seed for dummy weights and sampling.", rich_help_panel="Model"
        ),
        config: Path | None = config_option("serve"),
        policy: str | None = policy_option(),
        scheduler: str | None = scheduler_alias_option(),
        max_num_seqs: int | None = max_num_seqs_option(),
        max_num_batched_tokens: int | None = max_num_batched_tokens_option(),
        chunked_prefill: bool | None = chunked_prefill_option(),
        block_size: int | None = block_size_option(),
        max_model_len: int | None = max_model_len_option(),
        predictor: str | None = typer.Option(
            None,
            "--predictor",
            help="Output-length predictor for sjf/s3/slo-odbs: a trained model directory, "
            "'oracle' or 'noisy:ACC' (benchmarks with ignore_eos).",
            rich_help_panel="Scheduling",
        ),
        max_queue: int = typer.Option(
            1024,
            "--max-queue",
            min=0,
            help="Waiting requests before new ones get 429 + Retry-After.",
            rich_help_panel="Scheduling",
        ),
        num_kv_blocks: int | None = typer.Option(
            None,
            "--num-kv-blocks",
            min=1,
            help="KV cache blocks (default: from free memory).",
            rich_help_panel="KV cache",
        ),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all).", rich_help_panel="Server"
        ),
        port: int = typer.Option(8000, "--port", min=1, max=65535, rich_help_panel="Server"),
        drain_timeout: float = typer.Option(
            600.0,
            "--drain-timeout",
            min=0,
            help="Seconds SIGTERM waits for requests in flight before cancelling them.",
            rich_help_panel="Server",
        ),
        access_log: bool = typer.Option(
            False, "--access-log/--no-access-log", help="Log every request.", rich_help_panel="Server"
        ),
        log_level: str = typer.Option(
            "info", "--log-level", help="debug, info, warning or error.", rich_help_panel="Server"
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", envvar=["LLMPLAN_API_KEY", "VLLM_API_KEY"], show_envvar=True,
            help="Require 'Authorization: Bearer KEY' on /v1/* and /admin/* (401 otherwise); /health "
            "and /metrics stay open. A front end hands the key to its backends.",
            rich_help_panel="Server",
        ),
        enable_admin: bool = typer.Option(
            False, "--enable-admin", help="Serve /admin/* (live migration); needs --api-key off 127.0.0.1.",
            rich_help_panel="Server",
        ),
        protect_metrics: bool = typer.Option(
            False, "--protect-metrics", help="/metrics needs the API key too.", rich_help_panel="Server"
        ),
        max_request_mb: float = typer.Option(
            8.0, "--max-request-mb", help="Largest request body in MiB (413 above).", rich_help_panel="Server"
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="torch CPU threads (default: torch's). On a CPU shared with other work, 1 is often fastest.",
            rich_help_panel="Model",
        ),
        cpu_bind: str = typer.Option(
            "none",
            "--cpu-bind",
            help="Pin the engine's threads one per CPU, as vLLM's VLLM_CPU_OMP_THREADS_BIND: none, auto "
            "(the first --threads CPUs this process may use) or a list (0-3, 0,2). For a host the server "
            "has to itself; a list sets --threads to its length.",
            rich_help_panel="Model",
        ),
        record_mispredictions: Path | None = typer.Option(
            None,
            "--record-mispredictions",
            help="Append (prompt, actual length) of requests whose length bucket was mispredicted to this "
            "JSONL file, for `llmplan predict update` (UELLM's online correction). Needs --predictor.",
            rich_help_panel="Scheduling",
        ),
        workers: int = typer.Option(
            1,
            "--workers",
            min=1,
            help="Split the built-in engine's decoder layers over N worker processes (rank 0 is this "
            "server: embedding, scheduling, LM head, sampling); gloo on CPU, NCCL on CUDA.",
            rich_help_panel="Multi-worker instance",
        ),
        layer_split: str | None = typer.Option(
            None,
            "--layer-split",
            help="Layers per worker, e.g. 1,3 (must sum to the model's layers). Default: the --plan's "
            "stages when it has --workers of them, else an even split.",
            rich_help_panel="Multi-worker instance",
        ),
        migration_controller: bool = typer.Option(
            False,
            "--migration-controller/--no-migration-controller",
            help="Run the migration controller (Algorithm 4-1) in the engine loop over live worker loads; "
            "it moves boundary layers between workers (compute-bound) or offloads KV heads and their "
            "attention (memory-bound). POST /admin/migrate and /admin/offload work either way.",
            rich_help_panel="Multi-worker instance",
        ),
        control_interval: float = typer.Option(
            1.0,
            "--control-interval",
            min=0.01,
            help="Seconds between two load measurements of the migration controller.",
            rich_help_panel="Multi-worker instance",
        ),
        worker_timeout: float = typer.Option(
            120.0,
            "--worker-timeout",
            min=1,
            help="Seconds a step or migration may wait on a worker before the instance fails.",
            rich_help_panel="Multi-worker instance",
        ),
        worker_memory_gb: float | None = typer.Option(
            None,
            "--worker-memory-gb",
            min=0.001,
            help="Memory per worker (M_max of the controller's load C/Cmax + M/Mmax). Default: the GPU's "
            "memory, or RAM / --workers on CPU.",
            rich_help_panel="Multi-worker instance",
        ),
        engine_kind: str = typer.Option(
            "builtin",
            "--engine",
            help="builtin (this package's torch engine) or vllm (one supervised `vllm serve` per plan "
            "instance, needs --plan and `pip install 'llmplan\\[vllm]'`).",
            rich_help_panel="Deployment (front end)",
        ),
        instances: int = typer.Option(
            1,
            "--instances",
            min=1,
            help="Built-in engine: run N servers behind one front end (router + admission queue).",
            rich_help_panel="Deployment (front end)",
        ),
        base_port: int | None = typer.Option(
            None,
            "--base-port",
            help="First backend port (default --port + 1); one port per instance.",
            rich_help_panel="Deployment (front end)",
        ),
        router: str = typer.Option(
            "least-loaded",
            "--router",
            help="round-robin, least-loaded, jsq, prefix-aware, banaserve (the simulator's routers).",
            rich_help_panel="Deployment (front end)",
        ),
        admission: str = typer.Option(
            "slo-odbs",
            "--admission",
            help="Front-end queue order: fcfs, slo-odbs, slo-dbs or odbs. With --engine vllm it also "
            "orders vLLM's own queue (sjf and ljf too), by the route --vllm-route picks; see docs/vllm.md.",
            rich_help_panel="Deployment (front end)",
        ),
        max_inflight: int = typer.Option(
            64,
            "--max-inflight",
            min=1,
            help="Requests in flight per backend before the front end queues.",
            rich_help_panel="Deployment (front end)",
        ),
        vllm_bin: str | None = typer.Option(
            None,
            "--vllm-bin",
            envvar="LLMPLAN_VLLM_BIN",
            help="The `vllm` executable for --engine vllm (default: `vllm` on PATH), e.g. a separate "
            "venv's /venv/bin/vllm.",
            rich_help_panel="Deployment (front end)",
        ),
        vllm_route: str = typer.Option(
            "priority",
            "--vllm-route",
            help="How --admission orders vLLM's own queue. `priority`: vLLM's public priority "
            "scheduling (--scheduling-policy priority), each request's `priority` set by the front end "
            "from the policy's order key; any vLLM with priority scheduling; only orders fixed at "
            "arrival. `scheduler-cls`: vLLM loads llmplan's PolicyScheduler (--scheduler-cls), which "
            "asks the policy at every admission, so slo-odbs keeps its aging and late-request tiers and "
            "requests' slo_ttft_s/slo_tpot_s/slo_e2e_s reach it; vLLM 0.32.x only, and vLLM's Python "
            "must import numpy and pandas.",
            rich_help_panel="Deployment (front end)",
        ),
        connector: str = typer.Option(
            "NixlConnector",
            "--connector",
            help="vLLM KV connector for P/D plans: NixlConnector, P2pNcclConnector or LMCacheConnectorV1.",
            rich_help_panel="Deployment (front end)",
        ),
        health_timeout: float = typer.Option(
            900.0,
            "--health-timeout",
            min=1,
            help="Seconds each backend may take to become healthy.",
            rich_help_panel="Deployment (front end)",
        ),
        max_restarts: int = typer.Option(
            3,
            "--max-restarts",
            min=0,
            help="Restarts of a crashed backend before giving up on it.",
            rich_help_panel="Deployment (front end)",
        ),
        log_dir: Path = typer.Option(
            Path("llmplan-logs"),
            "--log-dir",
            help="Backend logs, one file per instance.",
            rich_help_panel="Deployment (front end)",
        ),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Print the backend commands of a deployment and exit.",
            rich_help_panel="Deployment (front end)",
        ),
        pd: str | None = typer.Option(
            None,
            "--pd",
            help="Built-in engine: split --instances into P prefill + D decode instances, e.g. --pd 1:1. "
            "The front end runs each prompt on a prefill instance (max_tokens=1), then hands the request "
            "to a decode instance, which loads the prompt's KV from the global store (--kv-store; a "
            "temporary directory when omitted) and recomputes only the partial tail block.",
            rich_help_panel="P/D disaggregation",
        ),
        kv_store: str | None = typer.Option(
            None,
            "--kv-store",
            help="Global KV cache store: a DIR (memory tier + checksummed disk tier, shared by every "
            "server pointed at it; survives restarts) or 'memory'. Prompt prefixes found there are "
            "loaded layer by layer instead of computed; new full blocks are written back.",
            rich_help_panel="KV cache store",
        ),
        kv_store_memory_mb: int | None = typer.Option(
            None,
            "--kv-store-memory-mb",
            help="Memory tier of --kv-store in MiB (default 1024; 0 = disk tier only).",
            rich_help_panel="KV cache store",
        ),
        enable_prefix_caching: bool = typer.Option(
            False,
            "--enable-prefix-caching",
            help="GPU-resident prefix cache in the block manager (vLLM's automatic prefix caching): "
            "prompts sharing full blocks with a cached prefix reuse their KV; with --kv-store the store "
            "is the tier below it. /metrics: llmplan_prefix_cache_{queries,hits}_total.",
            rich_help_panel="KV cache store",
        ),
        kv_store_disk_gb: float | None = typer.Option(
            None,
            "--kv-store-disk-gb",
            help="Cap the disk tier of --kv-store DIR at this many GiB (least recently used files go "
            "first; each server counts what it wrote or read). Default: no cap.",
            rich_help_panel="KV cache store",
        ),
    ) -> None:
        import logging

        from llmplan.cli.engine_args import engine_args, policy_from

        policy = policy_from(policy, scheduler)
        spec = None
        if config is not None:
            from llmplan.deployment import load_spec

            spec = load_spec(config)
            if dummy_weights is None and model is None:
                # A catalog model serves with dummy weights; a path is a local HF directory.
                if Path(spec.model).expanduser().is_dir():
                    model = Path(spec.model)
                else:
                    dummy_weights = spec.model
        eargs = engine_args(
            spec.engine if spec else None, policy=policy, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, chunked_prefill=chunked_prefill,
            block_size=block_size, max_model_len=max_model_len,
        )  # fmt: skip
        from llmplan.cli._serve_checks import check_serve_options

        check_serve_options(
            model=model, dummy_weights=dummy_weights, plan=plan, device=device, dtype=dtype,
            scheduler=eargs.policy, predictor=predictor, engine_kind=engine_kind, log_level=log_level,
            threads=threads, max_model_len=eargs.max_model_len, num_kv_blocks=num_kv_blocks,
            block_size=eargs.block_size, max_num_seqs=eargs.max_num_seqs,
            max_num_batched_tokens=eargs.max_num_batched_tokens,
            drain_timeout=drain_timeout, control_interval=control_interval, worker_timeout=worker_timeout,
            worker_memory_gb=worker_memory_gb, workers=workers, instances=instances,
            max_inflight=max_inflight, health_timeout=health_timeout, max_restarts=max_restarts,
        )  # fmt: skip
        kv_store_args = _kv_store_args(kv_store, kv_store_memory_mb, kv_store_disk_gb)
        from llmplan.energy.live import check_clock_control

        check_clock_control(clock_control, device, workers,
                            engine_kind != "builtin" or instances > 1 or pd is not None)
        guard = _guard(host, api_key, enable_admin, protect_metrics, max_request_mb)
        _check_workers(workers, layer_split, migration_controller,
                       engine_kind != "builtin" or instances > 1 or pd is not None)
        if cpu_bind.strip().lower() not in ("", "none") and (
            engine_kind != "builtin" or instances > 1 or pd is not None or workers != 1
        ):
            from llmplan.errors import LlmplanError

            raise LlmplanError("--cpu-bind pins one built-in engine's threads; drop it with --engine vllm, "
                               "--instances, --pd or --workers (their processes would share the CPUs)")
        if vllm_route != "priority" and engine_kind != "vllm":
            from llmplan.errors import LlmplanError

            raise LlmplanError("--vllm-route is for --engine vllm; the built-in engine runs --policy itself")
        if engine_kind != "builtin" or instances > 1 or pd is not None:
            _serve_deployment(
                engine_kind=engine_kind,
                instances=instances,
                plan=plan,
                model=model,
                dummy_weights=dummy_weights,
                served_model_name=served_model_name,
                host=host,
                port=port,
                base_port=base_port,
                router=router,
                admission=admission,
                max_inflight=max_inflight,
                max_queue=max_queue,
                connector=connector,
                vllm_bin=vllm_bin,
                vllm_route=vllm_route,
                health_timeout=health_timeout,
                max_restarts=max_restarts,
                log_dir=log_dir,
                dry_run=dry_run,
                pd=pd,
                guard=guard,
                builtin_args=[
                    "--policy",
                    eargs.policy,
                    "--max-num-seqs",
                    str(eargs.max_num_seqs),
                    "--max-num-batched-tokens",
                    str(eargs.max_num_batched_tokens),
                    "--chunked-prefill" if eargs.chunked_prefill else "--no-chunked-prefill",
                    "--device",
                    device,
                    "--dtype",
                    dtype,
                    "--max-queue",
                    str(max_queue),
                    "--block-size",
                    str(eargs.block_size),
                    "--seed",
                    str(seed),
                    *(["--predictor", predictor] if predictor else []),
                    *(["--num-kv-blocks", str(num_kv_blocks)] if num_kv_blocks else []),
                    *(["--max-model-len", str(eargs.max_model_len)] if eargs.max_model_len else []),
                    *(["--served-model-name", served_model_name] if served_model_name else []),
                    *(["--threads", str(threads)] if threads else []),
                    *(["--enable-admin"] if enable_admin else []),
                    *(["--protect-metrics"] if protect_metrics else []),
                    "--max-request-mb",
                    str(max_request_mb),
                    *kv_store_args[2:],  # the tier flags; --kv-store itself goes as kv_store=
                    *(["--enable-prefix-caching"] if enable_prefix_caching else []),
                ],
                kv_store=Path(kv_store_args[1]) if kv_store_args else None,
            )
            return

        from llmplan.cli._common import console
        from llmplan.errors import LlmplanError
        from llmplan.runtime.server.run import ServeOptions, port_is_free
        from llmplan.runtime.server.run import serve as run_server

        if (model is None) == (dummy_weights is None):
            raise LlmplanError("give exactly one of --model PATH or --dummy-weights NAME (e.g. llama-tiny)")
        if model is not None and not model.expanduser().is_dir():
            raise LlmplanError(f"--model {model} is not a directory; point it at a local Hugging Face model")
        if not port_is_free(host, port):
            raise LlmplanError(f"port {port} on {host} is in use; pick another --port or stop that server")
        logging.basicConfig(
            level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
        )
        with console.status(f"loading {model or dummy_weights} ..."):
            from llmplan.runtime.factory import EngineConfig, build_engine

            engine = build_engine(
                EngineConfig(
                    model=model.expanduser() if model else None,
                    dummy_weights=dummy_weights,
                    plan=plan,
                    args=eargs,
                    num_kv_blocks=num_kv_blocks,
                    device=device,
                    dtype=dtype,
                    max_queue=max_queue,
                    seed=seed,
                    predictor=_predictor(predictor, seed),
                    served_model_name=served_model_name,
                    threads=threads,
                    cpu_bind=cpu_bind,
                    workers=workers,
                    layer_split=layer_split,
                    migration_controller=migration_controller,
                    control_interval_s=control_interval,
                    worker_timeout_s=worker_timeout,
                    worker_memory_gb=worker_memory_gb,
                    misprediction_log=record_mispredictions,
                    kv_store=kv_store_args[1] if kv_store_args else None,
                    kv_store_memory_mb=1024 if kv_store_memory_mb is None else kv_store_memory_mb,
                    kv_store_disk_gb=kv_store_disk_gb,
                    enable_prefix_caching=enable_prefix_caching,
                )
            )
        if str(device).startswith("cpu"):
            from llmplan.runtime.engine.hostmem import keep_freed_memory

            keep_freed_memory()  # a long-lived CPU server re-allocates its activations every step
            from rich.markup import escape

            from llmplan.runtime.engine import native

            kernel = native.state()
            console.print(
                f"[dim]decode attention and linear: {'compiled CPU kernels' if kernel.fn else 'torch ops'} "
                f"({escape(kernel.reason)})[/]",
                highlight=False,
                soft_wrap=True,
            )
        if getattr(engine, "cpu_bind", None):
            console.print(f"[dim]engine threads: one per CPU of {list(engine.cpu_bind)}[/]", highlight=False)
        ctl = None
        if clock_control:
            from llmplan.energy.live import attach_clock_control

            served = str(model.expanduser()) if model else str(dummy_weights)
            ctl = attach_clock_control(engine, served, device)
            console.print(f"clock control: EcoFreq on GPU{ctl.gpu_indices[0]} ({ctl.cost.power.model}); "
                          "a refused clock lock turns it off and is logged")
        url = f"http://{host}:{port}"
        console.print(
            f"[bold green]llmplan serve[/] {engine.model_name} (context {engine.max_model_len}) on {url}  "
            f"[dim]OpenAI API: {url}/v1  metrics: {url}/metrics  Ctrl-C drains and stops[/]",
            highlight=False,
            soft_wrap=True,
        )
        try:
            run_server(
                engine,
                ServeOptions(
                    host=host,
                    port=port,
                    served_model_name=served_model_name,
                    drain_timeout_s=drain_timeout,
                    log_level=log_level.lower(),
                    access_log=access_log,
                    guard=guard,
                ),
            )
        finally:
            if ctl is not None:
                ctl.close()  # clocks back to the driver


def _guard(host: str, api_key: str | None, enable_admin: bool, protect_metrics: bool, max_request_mb: float):
    """The server's API key, admin switch and body limit, checked (llmplan.runtime.server.guard)."""
    import math

    from llmplan.errors import LlmplanError
    from llmplan.runtime.server.guard import GuardConfig, check_exposure

    if not (math.isfinite(max_request_mb) and 0 < max_request_mb <= 1024):
        raise LlmplanError(f"--max-request-mb must be in (0, 1024] (got {max_request_mb})")
    if protect_metrics and api_key is None:
        raise LlmplanError("--protect-metrics needs --api-key KEY (or LLMPLAN_API_KEY)")
    cfg = GuardConfig(api_key=api_key, protect_metrics=protect_metrics, enable_admin=enable_admin,
                      max_body_bytes=int(max_request_mb * (1 << 20)))
    check_exposure(host, cfg)
    return cfg


def _kv_store_args(kv_store: str | None, memory_mb: int | None, disk_gb: float | None = None) -> list[str]:
    """Check the KV-store flags; ``[--kv-store PATH, (tier flags)]`` for a deployment's backends."""
    from llmplan.errors import LlmplanError

    if kv_store is None:
        if memory_mb is not None:
            raise LlmplanError("--kv-store-memory-mb needs --kv-store DIR (or --kv-store memory)")
        if disk_gb is not None:
            raise LlmplanError("--kv-store-disk-gb needs --kv-store DIR")
        return []
    if disk_gb is not None and (kv_store == "memory" or not disk_gb > 0):
        raise LlmplanError(f"--kv-store-disk-gb must be > 0 and needs a --kv-store DIR (got {disk_gb})")
    if not kv_store.strip():
        raise LlmplanError("--kv-store needs a directory, or 'memory' for a memory-only store")
    if memory_mb is not None and memory_mb < 0:
        raise LlmplanError(f"--kv-store-memory-mb must be >= 0 (got {memory_mb})")
    if kv_store == "memory" and memory_mb == 0:
        raise LlmplanError("--kv-store memory with --kv-store-memory-mb 0 stores nothing; give it memory")
    if kv_store != "memory" and Path(kv_store).expanduser().is_file():
        raise LlmplanError(f"--kv-store {kv_store} is a file; point it at a directory (created if missing)")
    path = kv_store if kv_store == "memory" else str(Path(kv_store).expanduser().absolute())
    return ["--kv-store", path, *(["--kv-store-memory-mb", str(memory_mb)] if memory_mb is not None else []),
            *(["--kv-store-disk-gb", str(disk_gb)] if disk_gb is not None else [])]


def _check_workers(workers: int, layer_split: str | None, controller: bool, deployment: bool) -> None:
    """--workers shapes one built-in instance; say so rather than ignore it in a deployment."""
    from llmplan.errors import LlmplanError

    if deployment and (workers != 1 or layer_split or controller):
        raise LlmplanError("--workers/--layer-split/--migration-controller shape one built-in instance; "
                           "drop them with --instances, --pd or --engine vllm")
    if workers == 1 and (layer_split or controller):
        raise LlmplanError("--layer-split and --migration-controller need --workers 2 or more")


def _serve_deployment(  # noqa: C901 - one branch per deployment option (engine kind, P/D, plan, store) mapped onto DeployConfig
    *,
    engine_kind: str,
    instances: int,
    plan: Path | None,
    model: Path | None,
    dummy_weights: str | None,
    served_model_name: str | None,
    host: str,
    port: int,
    base_port: int | None,
    router: str,
    admission: str,
    max_inflight: int,
    max_queue: int,
    connector: str,
    health_timeout: float,
    max_restarts: int,
    log_dir: Path,
    dry_run: bool,
    builtin_args: list[str],
    vllm_bin: str | None = None,
    vllm_route: str = "priority",
    pd: str | None = None,
    kv_store: Path | None = None,
    guard=None,  # noqa: ANN001 - GuardConfig, imported lazily
) -> None:
    """Several backends behind llmplan's front end: vLLM from a plan, or N built-in servers."""
    from rich.markup import escape

    from llmplan.cli._common import console
    from llmplan.errors import LlmplanError
    from llmplan.frontend.admission import POLICIES
    from llmplan.frontend.deploy import DeployConfig, builtin_specs, run, vllm_specs
    from llmplan.frontend.launch import format_command
    from llmplan.routing import get_router

    get_router(router)  # fail on a bad name before anything starts
    from llmplan.frontend.vllm_compat import VllmRoute, launch_route

    route = VllmRoute()
    if engine_kind == "vllm":
        import shutil

        # vLLM orders its own queue by the policy (or keeps FCFS); refused here when the route
        # cannot carry the policy.
        route = launch_route(admission, vllm_route)
        if vllm_bin is not None and shutil.which(vllm_bin) is None:
            raise LlmplanError(f"--vllm-bin {vllm_bin} is not an executable; point it at a venv's bin/vllm")
    elif admission not in POLICIES:
        raise LlmplanError(f"unknown --admission {admission!r}; choose one of {', '.join(POLICIES)}")
    first = base_port if base_port is not None else port + 1
    split, pd_tmp, pd_note = None, False, ""
    if engine_kind != "builtin" and pd is not None:
        raise LlmplanError("--pd is for the built-in engine; vLLM deployments take P/D roles from --plan")
    if engine_kind == "vllm":
        if plan is None:
            raise LlmplanError("--engine vllm needs --plan plan.json (from `llmplan plan --out plan.json`)")
        specs = vllm_specs(
            plan,
            str(model) if model else None,
            host="127.0.0.1",  # backends are reached through the front end only
            base_port=first,
            connector=connector,
            served_model_name=served_model_name,
            vllm_bin=vllm_bin or ("vllm" if dry_run else None),
        )
        for spec in specs:
            spec.argv += route.argv
            spec.env |= route.env
    elif engine_kind == "builtin":
        if (model is None) == (dummy_weights is None):
            raise LlmplanError("give exactly one of --model PATH or --dummy-weights NAME (e.g. llama-tiny)")
        pd_tmp = pd is not None and kv_store is None and not dry_run
        split, kv_store, pd_note = _pd_split(pd, instances, kv_store, dry_run)
        specs = builtin_specs(
            instances,
            host="127.0.0.1",  # backends are reached through the front end only
            base_port=first,
            dummy_weights=dummy_weights,
            model=str(model) if model else None,
            extra_args=builtin_args + (["--plan", str(plan)] if plan else []),
            pd=split,
            kv_store=str(kv_store) if kv_store is not None else None,
        )
    else:
        raise LlmplanError(f"unknown --engine {engine_kind!r}; choose builtin or vllm")
    if dry_run:
        for spec in specs:
            console.print(
                f"[bold]{spec.name}[/] ({role_label(spec.role)}): {escape(format_command(spec))}",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"front end: http://{host}:{port} (router {router}, admission {admission})", highlight=False
        )
        return
    if engine_kind == "vllm" and vllm_route == "scheduler-cls":
        from llmplan.frontend.vllm_compat import preflight_scheduler_cls

        console.print("checking that vLLM's Python loads llmplan's scheduler class ...", highlight=False)
        preflight_scheduler_cls(specs[0].argv[0], route.env)
    cfg = DeployConfig(
        host=host,
        port=port,
        router=router,
        admission=admission,
        max_queue=max_queue,
        max_inflight_per_backend=max_inflight,
        log_dir=log_dir,
        health_timeout_s=health_timeout,
        max_restarts=max_restarts,
        pd_handoff="store" if engine_kind == "builtin" else "connector",
        vllm_priority=route.priority,
        vllm_slo_xargs=route.slo_xargs,
        **({"guard": guard} if guard is not None else {}),
    )
    console.print(f"starting {len(specs)} backend(s); logs in {log_dir}/", highlight=False)
    if pd_note:
        console.print(pd_note, highlight=False, soft_wrap=True)

    def on_event(event) -> None:  # noqa: ANN001 - SupervisorEvent
        style = {"crashed": "red", "failed": "bold red", "healthy": "green"}.get(event.kind, "dim")
        console.print(
            f"[{style}]{event.instance} {event.kind}[/] {escape(event.detail)}",
            highlight=False,
            soft_wrap=True,
        )

    def ready(url: str, *_: object) -> None:
        console.print(
            f"[bold green]llmplan front end[/] on {url}  [dim]OpenAI API: {url}/v1  "
            f"metrics: {url}/metrics  Ctrl-C stops the front end, then the backends[/]",
            highlight=False,
            soft_wrap=True,
        )

    try:
        run(specs, cfg, on_event=on_event, ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        if pd_tmp and kv_store is not None:
            import shutil

            shutil.rmtree(kv_store, ignore_errors=True)


def _pd_split(
    pd: str | None, instances: int, kv_store: Path | None, dry_run: bool
) -> tuple[tuple[int, int] | None, Path | None, str]:
    """Built-in P/D: the P:D split, the store directory the pairs hand KV through (a new
    temporary one when --kv-store is not given) and a line for the log."""
    if pd is None:
        return None, kv_store, ""
    from llmplan.errors import LlmplanError
    from llmplan.frontend.pd import parse_pd

    split = parse_pd(pd, instances)
    if kv_store is not None and str(kv_store) == "memory":
        raise LlmplanError(
            "--pd hands the KV between processes through the store's directory; --kv-store memory is "
            "private to each process: give --kv-store DIR (or leave it out for a temporary one)"
        )
    if kv_store is not None:
        return (
            split,
            kv_store,
            f"P/D {split[0]}:{split[1]}: prefill -> decode hand-off through the KV store {kv_store}",
        )
    import tempfile

    tmp = Path("<temporary directory>") if dry_run else Path(tempfile.mkdtemp(prefix="llmplan-kvstore-"))
    return (
        split,
        tmp,
        f"P/D {split[0]}:{split[1]}: no --kv-store given; prefill -> decode hand-off through the temporary "
        f"store {tmp} (removed at exit)",
    )
