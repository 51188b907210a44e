"""Bench reports: report.md, report.json, per-request CSVs, PNG plots and the terminal table."""

from llmplan.report.io import load_report, to_json, write_report
from llmplan.report.model import BenchReport, SweepPoint
from llmplan.report.terminal import print_report, summary_table, sweep_table

__all__ = [
    "BenchReport",
    "SweepPoint",
    "load_report",
    "print_report",
    "summary_table",
    "sweep_table",
    "to_json",
    "write_report",
]
