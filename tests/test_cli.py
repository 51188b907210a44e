"""The console script's shell: help lists every command; unbuilt commands exit 2 in one line."""

import subprocess
import sys

from typer.testing import CliRunner

from llmplan.cli.app import app

COMMANDS = ["topology", "plan", "predict", "profile", "serve", "bench", "report"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "llmplan.cli.app", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("llmplan ")
