"""Batch policies: plain objects that the scheduler (simulator and engine alike) consults.

``get_policy("slo-odbs", threshold=0.3)`` builds one by name; :data:`POLICIES` lists them.
See :mod:`llmplan.batch.base` for the protocol.

UELLM's policies come in two forms: ``slo-odbs`` / ``slo-dbs`` / ``odbs`` are the thesis's
static batching (compare them with ``static-fcfs``), ``slo-odbs-cb`` / ``slo-dbs-cb`` /
``odbs-cb`` apply the same ordering and grouping as the admission rule of continuous
batching (compare them with ``fcfs`` and ``s3``); see :mod:`llmplan.batch.uellm_cb`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmplan.batch.base import AdmissionView, BatchPolicy, booked_len, deadline, predicted_len, rank_key
from llmplan.batch.fcfs import ContinuousFCFS, StaticFCFS
from llmplan.batch.length import LJF, SJF
from llmplan.batch.s3 import S3
from llmplan.batch.uellm import ODBS, SLODBS, SLOODBS
from llmplan.batch.uellm_cb import ContinuousODBS, ContinuousSLODBS, ContinuousSLOODBS
from llmplan.registry import Registry

POLICIES: dict[str, Callable[..., Any]] = {
    "fcfs": ContinuousFCFS,
    "static-fcfs": StaticFCFS,
    "sjf": SJF,
    "ljf": LJF,
    "s3": S3,
    "slo-odbs": SLOODBS,
    "slo-dbs": SLODBS,
    "odbs": ODBS,
    "slo-odbs-cb": ContinuousSLOODBS,
    "slo-dbs-cb": ContinuousSLODBS,
    "odbs-cb": ContinuousODBS,
}
ALIASES = {
    "continuous-fcfs": "fcfs",
    "vllm": "fcfs",
    "static": "static-fcfs",
    "uellm": "slo-odbs",
    "uellm-cb": "slo-odbs-cb",
}


REGISTRY: Registry[Callable[..., BatchPolicy]] = Registry(
    "batch policy", POLICIES, aliases=ALIASES, list_aliases=True
)


def get_policy(name: str, **kwargs: Any) -> BatchPolicy:
    """Build a policy by name (case-insensitive; aliases: continuous-fcfs/vllm, static, uellm)."""
    return REGISTRY.create(name, **kwargs)


__all__ = [
    "ALIASES",
    "POLICIES",
    "REGISTRY",
    "AdmissionView",
    "BatchPolicy",
    "ContinuousFCFS",
    "ContinuousODBS",
    "ContinuousSLODBS",
    "ContinuousSLOODBS",
    "LJF",
    "ODBS",
    "S3",
    "SJF",
    "SLODBS",
    "SLOODBS",
    "StaticFCFS",
    "booked_len",
    "deadline",
    "get_policy",
    "predicted_len",
    "rank_key",
]
