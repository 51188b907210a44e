"""The scheduler/engine flags ``llmplan serve`` and ``llmplan bench`` share, from one class.

Every flag is generated from a field of :class:`llmplan.deployment.EngineArgs`, so both
commands spell it the same way and show the same default. Flags default to None ("not
given"): :func:`engine_args` starts from ``--config``'s settings (or the class defaults) and
lets only the flags the user typed override them.
"""

from __future__ import annotations

from typing import Any

import typer

from llmplan.deployment import EngineArgs

_D = EngineArgs()
PANEL = "Scheduling (same flags and defaults in serve and bench)"

_HELP = {
    "policy": "Batch policy (llmplan.batch): continuous fcfs (vLLM-like), sjf, ljf, s3, slo-odbs-cb, "
    "slo-dbs-cb, odbs-cb; static (a batch runs to its longest member): static-fcfs, slo-odbs, slo-dbs, "
    f"odbs. Default {_D.policy}.",
    "max_num_seqs": f"Most sequences in one step. Default {_D.max_num_seqs}.",
    "max_num_batched_tokens": f"Token budget per step (prefill chunk tokens + one per decode). "
    f"Default {_D.max_num_batched_tokens}.",
    "chunked_prefill": "Split long prompts across steps within the token budget (static policies never "
    f"chunk). Default {'on' if _D.chunked_prefill else 'off'}.",
    "block_size": f"KV block size in tokens. Default {_D.block_size}.",
    "max_model_len": "Longest prompt + output a request may ask for; longer ones are rejected (HTTP 400 "
    "live, 'rejected' simulated). Default: the model's context, capped by the KV pool.",
}


def policy_option() -> Any:
    return typer.Option(None, "--policy", "-p", help=_HELP["policy"], rich_help_panel=PANEL)


def scheduler_alias_option() -> Any:
    return typer.Option(None, "--scheduler", hidden=True, help="Deprecated spelling of --policy.")


def max_num_seqs_option() -> Any:
    return typer.Option(None, "--max-num-seqs", min=1, help=_HELP["max_num_seqs"], rich_help_panel=PANEL)


def max_num_batched_tokens_option() -> Any:
    return typer.Option(
        None, "--max-num-batched-tokens", min=1, help=_HELP["max_num_batched_tokens"], rich_help_panel=PANEL
    )


def chunked_prefill_option() -> Any:
    return typer.Option(
        None, "--chunked-prefill/--no-chunked-prefill", help=_HELP["chunked_prefill"], rich_help_panel=PANEL
    )


def block_size_option() -> Any:
    return typer.Option(None, "--block-size", min=1, help=_HELP["block_size"], rich_help_panel=PANEL)


def max_model_len_option() -> Any:
    return typer.Option(None, "--max-model-len", min=2, help=_HELP["max_model_len"], rich_help_panel=PANEL)


def config_option(command: str) -> Any:
    return typer.Option(
        None,
        "--config",
        help=f"A deployment spec (from `llmplan plan --out`, or GET /v1/deployment of a server): model, "
        f"instances, scheduler settings, router. Flags given to `llmplan {command}` override its fields.",
    )


def policy_from(policy: str | None, scheduler: str | None) -> str | None:
    """``--policy``, or the deprecated ``--scheduler`` with a deprecation line on stderr."""
    from llmplan.errors import LlmplanError

    if scheduler is None:
        return policy
    if policy is not None and policy != scheduler:
        raise LlmplanError(f"--scheduler {scheduler} and --policy {policy} disagree; give --policy only")
    from llmplan.cli._flags import deprecated

    deprecated(f"--scheduler {scheduler}", f"--policy {scheduler} (the same flag in serve and bench)")
    return scheduler


def engine_args(base: EngineArgs | None = None, **flags: Any) -> EngineArgs:
    """``base`` (a spec's settings, or the defaults) with every flag that was given (not None)."""
    from dataclasses import replace

    given = {k: v for k, v in flags.items() if v is not None}
    return replace(base or EngineArgs(), **given).validate()
