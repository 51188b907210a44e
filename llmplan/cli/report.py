"""`llmplan report`: re-render a saved bench run directory."""

from __future__ import annotations

from pathlib import Path

import typer

from llmplan.cli._common import console, print_json


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help="Re-render a saved `llmplan bench --out DIR` run: report.md, plots and the summary table, "
        "from report.json and the per-request CSVs.",
    )
    def report(
        directory: Path = typer.Argument(Path("llmplan-report"), help="The report directory."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Re-draw the PNG plots."),
        out: Path = typer.Option(
            None, "--out", "-o", help="Write the re-rendered report here (default: in place)."
        ),
        json_out: bool = typer.Option(
            False, "--json", help="Print report.json to stdout instead of the table."
        ),
    ) -> None:
        from llmplan.report import load_report, print_report, to_json, write_report

        rep = load_report(directory)
        write_report(rep, out or directory, plots=plots)
        if json_out:
            print_json(to_json(rep))
            return
        print_report(rep, console)
        console.print(f"report: [bold]{out or directory}/report.md[/]")
