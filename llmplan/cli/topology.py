"""`llmplan topology`: Discover GPUs and links (NVML, nvidia-smi, file or preset) into a graph."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "topology",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Discover GPUs and links (NVML, nvidia-smi, file or preset) into a graph.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("topology", 2)
