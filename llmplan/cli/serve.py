"""`llmplan serve`: Run the instrumented engine behind an OpenAI-compatible API."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "serve",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Run the instrumented engine behind an OpenAI-compatible API.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("serve", 6)
