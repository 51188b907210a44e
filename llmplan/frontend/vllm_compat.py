"""What :mod:`llmplan.frontend.vllm_scheduler` checks before vLLM uses it; importable without vLLM."""

from __future__ import annotations

import os

from llmplan.batch import get_policy
from llmplan.batch.base import BatchPolicy

# vLLM's scheduler internals (Scheduler.waiting, RequestQueue) as of the installed 0.32.0 source.
SUPPORTED_VERSIONS = ("0.32.",)
POLICY_ENV = "LLMPLAN_VLLM_POLICY"


def check_version(version: str) -> None:
    """Raise with one line unless the scheduler class was written against this vLLM."""
    if not version.startswith(SUPPORTED_VERSIONS):
        raise RuntimeError(
            f"llmplan's PolicyScheduler supports vLLM {', '.join(v + 'x' for v in SUPPORTED_VERSIONS)}, not "
            f"{version}; use the priority route (llmplan serve --engine vllm --admission ...) instead"
        )


def policy_from_env(env: dict[str, str] | None = None) -> BatchPolicy:
    """The policy named by LLMPLAN_VLLM_POLICY (default slo-odbs-cb, with its aging and late tiers)."""
    name = (os.environ if env is None else env).get(POLICY_ENV, "slo-odbs-cb")
    policy = get_policy(name)
    if policy.static or policy.skip_blocked:
        raise RuntimeError(
            f"{POLICY_ENV}={name}: static batching and first-fit packing need llmplan's own scheduler; "
            "choose fcfs, sjf, ljf, slo-odbs-cb, slo-dbs-cb or odbs-cb"
        )
    return policy
