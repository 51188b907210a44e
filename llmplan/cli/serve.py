"""`llmplan serve`: Run the instrumented engine behind an OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Run the built-in torch engine behind an OpenAI-compatible HTTP API.

Endpoints: POST /v1/completions and /v1/chat/completions (SSE with "stream": true),
GET /v1/models, /health and /metrics (Prometheus). SIGTERM or Ctrl-C drains: requests in
flight finish, new ones get 503, then the process exits 0.

Examples:

  llmplan serve --dummy-weights llama-tiny --port 8000          # random weights, CPU, seconds to start

  llmplan serve --model ~/models/Qwen2-0.5B --device cuda --dtype bfloat16

  llmplan serve --dummy-weights llama-120m --scheduler slo-odbs --predictor noisy:0.8
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
            None, "--model", help="Local Hugging Face model directory (config.json + safetensors).",
            rich_help_panel="Model",
        ),
        dummy_weights: str | None = typer.Option(
            None, "--dummy-weights",
            help="Random weights for a catalog config (llama-tiny, llama-120m, ...), for benchmarks.",
            rich_help_panel="Model",
        ),
        served_model_name: str | None = typer.Option(
            None, "--served-model-name", help="Model id clients send and /v1/models lists.",
            rich_help_panel="Model",
        ),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N (without --plan).",
                                   rich_help_panel="Model"),
        dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.",
                                  rich_help_panel="Model"),
        plan: Path | None = typer.Option(
            None, "--plan", help="Plan JSON whose device map places the layers (from `llmplan plan --json`).",
            rich_help_panel="Model",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed for dummy weights and sampling.",
                                 rich_help_panel="Model"),
        scheduler: str = typer.Option(
            "fcfs", "--scheduler",
            help="Batch policy from the simulator: fcfs, static, sjf, ljf, s3, slo-odbs, slo-dbs, odbs.",
            rich_help_panel="Scheduling",
        ),
        predictor: str | None = typer.Option(
            None, "--predictor",
            help="Output-length predictor for sjf/s3/slo-odbs: a trained model directory, "
                 "'oracle' or 'noisy:ACC' (benchmarks with ignore_eos).",
            rich_help_panel="Scheduling",
        ),
        max_num_seqs: int = typer.Option(64, "--max-num-seqs", min=1, help="Most requests in one batch.",
                                         rich_help_panel="Scheduling"),
        max_num_batched_tokens: int = typer.Option(
            512, "--max-num-batched-tokens", min=1, help="Token budget per step (chunked prefill).",
            rich_help_panel="Scheduling",
        ),
        max_queue: int = typer.Option(
            1024, "--max-queue", min=0, help="Waiting requests before new ones get 429 + Retry-After.",
            rich_help_panel="Scheduling",
        ),
        num_kv_blocks: int | None = typer.Option(
            None, "--num-kv-blocks", min=1, help="KV cache blocks (default: from free memory).",
            rich_help_panel="KV cache",
        ),
        block_size: int = typer.Option(16, "--block-size", min=1, help="Tokens per KV block.",
                                       rich_help_panel="KV cache"),
        max_model_len: int | None = typer.Option(
            None, "--max-model-len", min=1, help="Cap the context length (default: the model's).",
            rich_help_panel="KV cache",
        ),
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all).",
                                 rich_help_panel="Server"),
        port: int = typer.Option(8000, "--port", min=1, max=65535, rich_help_panel="Server"),
        drain_timeout: float = typer.Option(
            600.0, "--drain-timeout", min=0,
            help="Seconds SIGTERM waits for requests in flight before cancelling them.",
            rich_help_panel="Server",
        ),
        access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request.",
                                        rich_help_panel="Server"),
        log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error.",
                                      rich_help_panel="Server"),
    ) -> None:
        import logging

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
            from llmplan.runtime.engine import build_engine

            engine = build_engine(
                model=model.expanduser() if model else None,
                dummy_weights=dummy_weights,
                plan=plan,
                scheduler=scheduler,
                max_num_seqs=max_num_seqs,
                num_kv_blocks=num_kv_blocks,
                block_size=block_size,
                device=device,
                dtype=dtype,
                max_queue=max_queue,
                seed=seed,
                max_num_batched_tokens=max_num_batched_tokens,
                max_model_len=max_model_len,
                predictor=_predictor(predictor, seed),
                served_model_name=served_model_name,
            )
        url = f"http://{host}:{port}"
        console.print(
            f"[bold green]llmplan serve[/] {engine.model_name} (context {engine.max_model_len}) on {url}  "
            f"[dim]OpenAI API: {url}/v1  metrics: {url}/metrics  Ctrl-C drains and stops[/]",
            highlight=False, soft_wrap=True,
        )
        run_server(
            engine,
            ServeOptions(
                host=host, port=port, served_model_name=served_model_name, drain_timeout_s=drain_timeout,
                log_level=log_level.lower(), access_log=access_log,
            ),
        )
