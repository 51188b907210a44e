"""`llmplan plan`: Place contiguous layers on GPUs (HE/LR/HELR) and plan prefill:decode ratios."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "plan",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Place contiguous layers on GPUs (HE/LR/HELR) and plan prefill:decode ratios.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("plan", 3)
