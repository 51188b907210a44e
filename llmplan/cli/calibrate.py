"""`llmplan calibrate`: Measure the engine's per-iteration cost and write a simulator profile."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "calibrate",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Measure the engine's per-iteration cost and write a simulator profile.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("calibrate", 6)
