"""`llmplan profile`: Collect, fit and query the K-Prototypes resource profiler."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "profile",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Collect, fit and query the K-Prototypes resource profiler.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("profile", 5)
