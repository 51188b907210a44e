"""Turn a deployment into processes: vLLM servers from a plan, or built-in servers.

Each instance becomes an :class:`InstanceSpec` (argv, environment, port, role) that the
supervisor runs. For vLLM the mapping is:

* a pipeline of S stages, each on T GPUs  -> ``--pipeline-parallel-size S --tensor-parallel-size T``
* the plan's GPUs in stage order          -> ``CUDA_VISIBLE_DEVICES`` (vLLM assigns ranks in
                                             that order: stage 0 gets the first T devices)
* a prefill or decode instance of a P/D plan -> ``--kv-transfer-config`` with the chosen
                                             connector; the front end hands each request from
                                             its prefill to its decode instance.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Literal

from llmplan.errors import LlmplanError
from llmplan.frontend.supervisor import InstanceSpec
from llmplan.roles import Role

Connector = Literal["NixlConnector", "P2pNcclConnector", "LMCacheConnectorV1"]


@dataclass(slots=True)
class VllmInstance:
    """One vLLM server: which GPUs, how they are split, which P/D role."""

    name: str
    gpus: list[int]  # physical indices, in pipeline-stage order
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    role: Role = "both"
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        need = self.tensor_parallel * self.pipeline_parallel
        if len(self.gpus) != need:
            raise LlmplanError(
                f"instance {self.name}: TP {self.tensor_parallel} x PP {self.pipeline_parallel} "
                f"needs {need} GPUs but the plan gives {len(self.gpus)} ({self.gpus}); "
                "fix the plan's stage sizes"
            )


def kv_transfer_config(role: str, connector: Connector = "NixlConnector") -> str:
    """The ``--kv-transfer-config`` JSON for a P/D role.

    NixlConnector and LMCacheConnectorV1 take ``kv_both`` on both sides (the request's
    ``kv_transfer_params`` say who produces); P2pNcclConnector wants producer/consumer.
    """
    if connector == "P2pNcclConnector":
        kv_role = "kv_producer" if role == "prefill" else "kv_consumer"
    else:
        kv_role = "kv_both"
    return json.dumps({"kv_connector": connector, "kv_role": kv_role}, separators=(",", ":"))


def vllm_spec(
    inst: VllmInstance,
    model: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    served_model_name: str | None = None,
    connector: Connector = "NixlConnector",
    vllm_bin: str | None = None,
) -> InstanceSpec:
    exe = vllm_bin or os.environ.get("LLMPLAN_VLLM_BIN") or shutil.which("vllm")
    if exe is None:
        raise LlmplanError("vLLM is not installed; run `pip install 'llmplan[vllm]'` (GPU machine) and "
                           "retry, or point --vllm-bin (LLMPLAN_VLLM_BIN) at a `vllm` executable")
    argv = [
        exe,
        "serve",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(inst.tensor_parallel),
        "--pipeline-parallel-size",
        str(inst.pipeline_parallel),
    ]
    if served_model_name:
        argv += ["--served-model-name", served_model_name]
    if inst.role != "both":
        argv += ["--kv-transfer-config", kv_transfer_config(inst.role, connector)]
    argv += inst.extra_args
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in inst.gpus)}
    return InstanceSpec(name=inst.name, argv=argv, port=port, host=host, env=env, role=inst.role)


def builtin_spec(
    name: str,
    port: int,
    *,
    dummy_weights: str | None = None,
    model: str | None = None,
    host: str = "127.0.0.1",
    extra_args: list[str] | None = None,
) -> InstanceSpec:
    """An ``llmplan serve`` instance (the built-in engine); same API as vLLM."""
    if (dummy_weights is None) == (model is None):
        raise LlmplanError("give exactly one of --model PATH or --dummy-weights NAME")
    argv = [sys.executable, "-m", "llmplan.cli.app", "serve", "--host", host, "--port", str(port)]
    argv += ["--dummy-weights", dummy_weights] if dummy_weights else ["--model", str(model)]
    argv += extra_args or []
    return InstanceSpec(name=name, argv=argv, port=port, host=host)


def format_command(spec: InstanceSpec) -> str:
    """The shell line an operator would type for this instance (for docs and --dry-run)."""
    import shlex

    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env.items())
    cmd = " ".join(shlex.quote(a) for a in spec.argv)
    return f"{env} {cmd}".strip()
