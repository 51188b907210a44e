"""`llmplan predict`: Train, evaluate and query the output-length bucket predictor."""

from __future__ import annotations

import typer

from llmplan.cli._common import not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "predict",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        help="Train, evaluate and query the output-length bucket predictor.",
    )
    def _stub(ctx: typer.Context) -> None:
        not_built("predict", 5)
