"""The `llmplan` console script.

Each command lives in its own module under ``llmplan/cli/`` and exposes ``register(app)``.
Command modules import the library lazily inside the command body so that
``llmplan topology`` stays fast (no torch import on that path).
"""

from __future__ import annotations

import typer

from llmplan import __version__
from llmplan.cli import bench, calibrate, plan, predict, profile, report, serve, topology
from llmplan.cli._common import fail
from llmplan.errors import LlmplanError

app = typer.Typer(
    name="llmplan",
    help=(
        "Plan, schedule and benchmark LLM inference deployments.\n\n"
        "Pipeline: topology -> plan -> predict/profile -> serve -> bench -> report."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llmplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Plan, schedule and benchmark LLM inference deployments."""


for _module in (topology, plan, predict, profile, serve, bench, report, calibrate):
    _module.register(app)


def main() -> None:
    try:
        app()
    except LlmplanError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
