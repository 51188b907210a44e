"""Workloads: trace loaders (Azure 2023/2024, ShareGPT, files), synthetic generators, SLOs."""

from llmplan.workload.loader import TRACE_NAMES, load_workload
from llmplan.workload.shaping import offered_rate, parse_window
from llmplan.workload.slo import SLOSpec, assign_slos, parse_slo_spec
from llmplan.workload.types import SLO, RequestSpec, Workload

__all__ = [
    "SLO",
    "TRACE_NAMES",
    "RequestSpec",
    "SLOSpec",
    "Workload",
    "assign_slos",
    "load_workload",
    "offered_rate",
    "parse_slo_spec",
    "parse_window",
]
