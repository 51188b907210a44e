"""What :mod:`llmplan.frontend.vllm_scheduler` checks before vLLM uses it; importable without vLLM."""

from __future__ import annotations

import os
from pathlib import Path

from llmplan.batch import get_policy
from llmplan.batch.base import BatchPolicy
from llmplan.errors import LlmplanError

# vLLM's scheduler internals (Scheduler.waiting, RequestQueue) as of the installed 0.32.0 source.
SUPPORTED_VERSIONS = ("0.32.",)
POLICY_ENV = "LLMPLAN_VLLM_POLICY"
SCHEDULER_CLS = "llmplan.frontend.vllm_scheduler.PolicyScheduler"
# The front end's --admission names -> the policy the scheduler class runs. Unlike the priority
# route, the scheduler class keeps the continuous UELLM policies' aging and late-request tiers.
_ADMISSION_TO_POLICY = {"slo-odbs": "slo-odbs-cb", "slo-dbs": "slo-dbs-cb", "odbs": "odbs-cb"}
_CHOICES = "fcfs, sjf, ljf, slo-odbs, slo-dbs, odbs (or their -cb names)"


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
    if _refusal(policy) is not None:
        raise RuntimeError(
            f"{POLICY_ENV}={name}: static batching and first-fit packing need llmplan's own scheduler; "
            "choose fcfs, sjf, ljf, slo-odbs-cb, slo-dbs-cb or odbs-cb"
        )
    return policy


def _refusal(policy: BatchPolicy) -> str | None:
    if policy.static:
        return "it batches statically (a batch runs to its longest member), which vLLM does not do"
    if policy.skip_blocked:
        return "it packs first-fit against the free KV each step, which needs llmplan's own scheduler"
    return None


def scheduler_cls_launch(admission: str) -> tuple[list[str], dict[str, str]]:
    """What ``llmplan serve --engine vllm --vllm-route scheduler-cls --admission NAME`` adds to each
    vLLM launch: the ``--scheduler-cls`` arguments and the environment (the policy's name, and
    PYTHONPATH so vLLM's interpreter imports this llmplan). Raises LlmplanError with one line for
    a policy the scheduler class cannot run."""
    name = _ADMISSION_TO_POLICY.get(admission, admission)
    try:
        policy = get_policy(name)
    except LlmplanError:
        msg = f"unknown --admission {admission!r}; with --vllm-route scheduler-cls choose {_CHOICES}"
        raise LlmplanError(msg) from None
    why = _refusal(policy)
    if why is not None:
        raise LlmplanError(f"--admission {admission} cannot run inside vLLM: {why}; choose {_CHOICES}")
    root = str(Path(__file__).resolve().parents[2])  # the directory that holds the llmplan package
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    path = os.pathsep.join([root, *rest])
    return ["--scheduler-cls", SCHEDULER_CLS], {POLICY_ENV: name, "PYTHONPATH": path}
