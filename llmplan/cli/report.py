"""`llmplan report`: Re-render a saved bench run directory."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Re-render a saved bench run directory.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("report", 4)
