"""`llmplan bench`: Replay traces against the simulator or a live server; write reports."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "bench",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Replay traces against the simulator or a live server; write reports.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("bench", 4)
