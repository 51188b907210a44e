"""What :mod:`llmplan.frontend.vllm_scheduler` checks before vLLM uses it; importable without vLLM."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from llmplan.batch import get_policy
from llmplan.batch.base import BatchPolicy
from llmplan.errors import LlmplanError
from llmplan.frontend.priority import ADMISSION_POLICIES, VllmPriority

# vLLM's scheduler internals (Scheduler.waiting, RequestQueue) as of the installed 0.32.0 source.
SUPPORTED_VERSIONS = ("0.32.",)
POLICY_ENV = "LLMPLAN_VLLM_POLICY"
SCHEDULER_CLS = "llmplan.frontend.vllm_scheduler.PolicyScheduler"
# The front end's --admission names -> the policy the scheduler class runs: the priority route's
# table without its settings, so the continuous UELLM policies keep their aging and late tiers.
_ADMISSION_TO_POLICY = {name: policy for name, (policy, _) in ADMISSION_POLICIES.items()}
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


VLLM_ROUTES = ("priority", "scheduler-cls")


@dataclass(frozen=True)
class VllmRoute:
    """How an ``--admission`` policy orders a vLLM backend's own queue, as launched and fronted."""

    argv: list[str] = field(default_factory=list)  # added to every vLLM launch
    env: dict[str, str] = field(default_factory=dict)  # added to every vLLM instance's environment
    priority: bool = False  # the front end sets each request's ``priority`` (DeployConfig.vllm_priority)
    slo_xargs: bool = False  # the front end passes SLOs as ``vllm_xargs`` (DeployConfig.vllm_slo_xargs)


def launch_route(admission: str, route: str = "priority") -> VllmRoute:
    """What ``llmplan serve --engine vllm --admission NAME --vllm-route ROUTE`` adds to its vLLM
    backends and front end. ``priority``: ``--scheduling-policy priority`` and a per-request
    priority, or nothing (vLLM's FCFS) for fcfs; ``scheduler-cls``: :func:`scheduler_cls_launch`
    and the SLOs as ``vllm_xargs``. Raises LlmplanError with one line for an unknown route or a
    policy the route cannot carry."""
    if route == "priority":
        prio = VllmPriority.for_admission(admission) is not None
        return VllmRoute(argv=["--scheduling-policy", "priority"] if prio else [], priority=prio)
    if route == "scheduler-cls":
        argv, env = scheduler_cls_launch(admission)
        return VllmRoute(argv=argv, env=env, slo_xargs=True)
    raise LlmplanError(f"unknown --vllm-route {route!r}; choose {' or '.join(VLLM_ROUTES)}")


_PREFLIGHT = (
    "import vllm\n"
    "from llmplan.frontend.vllm_compat import check_version\n"
    "check_version(vllm.__version__)\n"
    "import llmplan.frontend.vllm_scheduler\n"
)


def vllm_python(vllm_bin: str) -> list[str] | None:
    """The interpreter a ``vllm`` console script runs under (its ``#!`` line), or None when that
    cannot be read (not a script, not found)."""
    path = shutil.which(vllm_bin)
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    cmd = first[2:].decode(errors="replace").split()
    return cmd or None


def preflight_scheduler_cls(vllm_bin: str, env: dict[str, str], timeout_s: float = 300.0) -> None:
    """Check, before any instance starts, that the Python behind ``vllm_bin`` loads llmplan's
    scheduler class with ``env`` (what :func:`scheduler_cls_launch` returned): vLLM importable, a
    supported version, and llmplan's dependencies present. Raises LlmplanError with one line
    instead of leaving the reason in an instance log after a minute of vLLM start-up. Skipped
    when the interpreter cannot be read off the script."""
    python = vllm_python(vllm_bin)
    if python is None:
        return
    try:
        res = subprocess.run([*python, "-c", _PREFLIGHT], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as e:
        msg = f"could not run vLLM's Python ({' '.join(python)}) to check the scheduler class: {e}"
        raise LlmplanError(msg) from None
    if res.returncode != 0:
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit {res.returncode}"
        if "No module named 'vllm'" in why:
            fix = f"{vllm_bin} does not run on a Python with vLLM; point --vllm-bin at a vLLM install"
        elif "PolicyScheduler supports vLLM" in why:
            fix = "use --vllm-route priority, which any vLLM with priority scheduling takes"
        else:
            fix = ("install llmplan's dependencies (numpy, pandas) in vLLM's environment, or use "
                   "--vllm-route priority")
        who = " ".join(python)
        raise LlmplanError(f"vLLM's Python ({who}) cannot load llmplan's PolicyScheduler: {why}; {fix}")
