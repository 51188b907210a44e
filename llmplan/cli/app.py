"""The `llmplan` console script.

Each command lives in its own module under ``llmplan/cli/`` and exposes ``register(app)``.
Command modules import the library lazily inside the command body so that
``llmplan topology`` stays fast (no torch import on that path).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import typer

from llmplan import __version__
from llmplan.cli import bench, calibrate, plan, predict, profile, report, serve, topology
from llmplan.cli._common import fail
from llmplan.errors import LlmplanError

DEBUG_ENV = "LLMPLAN_DEBUG"


def _cli_error_types() -> tuple[type[BaseException], ...]:
    """Typer's usage/parameter errors: its own (typer >= 0.20 vendors click) and click's."""
    types: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        types.append(typer.TyperException)
    try:
        import click

        types.append(click.ClickException)
    except ImportError:
        pass
    return tuple(types)


_CLI_ERRORS = _cli_error_types()

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
    debug: bool = typer.Option(
        False,
        "--debug",
        help=f"Show the full traceback of an unexpected error (or set {DEBUG_ENV}=1).",
    ),
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress bars or spinners (they go to stderr, only on a terminal, never with --json).",
    ),
) -> None:
    """Plan, schedule and benchmark LLM inference deployments."""
    import sys

    from llmplan import progress

    if debug:
        os.environ[DEBUG_ENV] = "1"  # subprocesses (serve workers, live bench) inherit it
    # --json output is for programs: no progress either (it is on stderr, but keep it clean).
    progress.set_quiet(quiet or "--json" in sys.argv[1:])


for _module in (topology, plan, predict, profile, serve, bench, report, calibrate):
    _module.register(app)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def main(argv: Sequence[str] | None = None) -> None:
    """The console script: every error reaches the user as one line and exit code 2.

    A :class:`LlmplanError` carries its own message (the problem and the fix). A usage error
    (unknown option, a value of the wrong type) names the option and points to ``--help``.
    Anything else is a bug: one line naming the exception, plus how to see the traceback
    (``--debug`` or ``LLMPLAN_DEBUG=1``, which re-raise it instead).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = app(args=args, prog_name="llmplan", standalone_mode=False)
    except LlmplanError as exc:
        if _debug():
            raise
        fail(str(exc))
    except _CLI_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `llmplan` / `llmplan profile` alone: the help
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(2) from None
        if _debug():
            raise
        fail(_usage_line(exc), code=getattr(exc, "exit_code", 2) or 2)
    except (typer.Abort, KeyboardInterrupt):
        fail("interrupted", code=130)
    except SystemExit:
        raise
    except UnicodeDecodeError as exc:
        if _debug():
            raise
        fail(
            f"an input is not UTF-8 text ({exc.reason} at byte {exc.start}); pass a text file "
            "(run with --debug for the traceback)"
        )
    except MemoryError:
        if _debug():
            raise
        fail("out of memory; use a smaller input (e.g. --max-requests, a shorter --window)")
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback reaches a user
        if _debug():
            raise
        fail(
            f"unexpected {type(exc).__name__}: {exc} -- this is a bug in llmplan; "
            f"run with --debug (or {DEBUG_ENV}=1) for the traceback"
        )
    if isinstance(rv, int) and rv != 0:  # a typer.Exit(code) under standalone_mode=False
        raise SystemExit(rv)


def _usage_line(exc: BaseException) -> str:
    fmt = getattr(exc, "format_message", None)
    msg = fmt() if callable(fmt) else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None)
    return f"{msg} (see `{path} --help`)" if path else msg


if __name__ == "__main__":
    main()
