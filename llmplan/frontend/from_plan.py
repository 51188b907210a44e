"""A Plan's instances as vLLM launch descriptions (argv tail + environment).

This is the one place that knows how plan stages map to vLLM's parallelism flags; both the
``vllm serve`` line that ``llmplan plan`` prints and the processes that
``llmplan serve --engine vllm`` supervises come from :func:`vllm_launch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.models.spec import ModelSpec
from llmplan.plan.types import Plan


def vllm_default_partition(layers: int, pp: int) -> list[int]:
    """vLLM's own split (``get_pp_indices``): the remainder goes to the stages before the last."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


@dataclass(slots=True)
class VllmLaunch:
    """How to start one plan instance on vLLM."""

    name: str
    role: str  # colocated | prefill | decode
    gpus: list[int]  # CUDA indices in stage order
    tensor_parallel: int
    pipeline_parallel: int
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # flags after `vllm serve MODEL`
    notes: list[str] = field(default_factory=list)


def vllm_launch(plan: Plan, instance: int = 0, *, hosts: dict[str, str] | None = None) -> VllmLaunch:
    """Raise LlmplanError when vLLM cannot express the instance's layout.

    ``hosts`` maps GPU node ids to host names (from the topology); an instance spanning
    several hosts needs Ray as vLLM's distributed executor.
    """
    spec = ModelSpec.from_dict(plan.model_spec)
    stages = plan.instance_stages(instance)
    tps = {len(s.gpus) for s in stages}
    if len(tps) != 1:
        raise LlmplanError(
            "stages use different TP degrees; vLLM needs one TP size for all pipeline stages "
            "(use the HF device_map, or re-plan with uniform stages)"
        )
    if len({s.gpu_name for s in stages}) != 1:
        raise LlmplanError(
            "stages mix GPU models; vLLM assumes identical GPUs "
            "(use the HF device_map with the built-in engine)"
        )
    tp, pp = tps.pop(), len(stages)
    role = plan.instances[instance].role
    launch = VllmLaunch(
        name=f"{'vllm' if role == 'both' else role}{instance}",
        role="colocated" if role == "both" else role,
        gpus=[i for s in stages for i in s.gpu_indices],
        tensor_parallel=tp,
        pipeline_parallel=pp,
    )
    launch.env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, launch.gpus))
    counts = [s.layers for s in stages]
    if pp > 1 and counts != vllm_default_partition(spec.num_hidden_layers, pp):
        launch.env["VLLM_PP_LAYER_PARTITION"] = ",".join(map(str, counts))
        launch.notes.append("the plan's uneven layer split is passed via VLLM_PP_LAYER_PARTITION")
    wl = plan.workload
    launch.args = [
        "--tensor-parallel-size",
        str(tp),
        "--pipeline-parallel-size",
        str(pp),
        "--max-num-seqs",
        str(wl.max_batch),
        "--max-model-len",
        str(wl.input_len + wl.output_len),
        "--dtype",
        spec.dtype,
    ]
    if spec.family == "chatglm":
        launch.args.append("--trust-remote-code")
        launch.notes.append("ChatGLM needs --trust-remote-code")
    if hosts and len({hosts.get(g, "") for s in stages for g in s.gpus}) > 1:
        launch.args += ["--distributed-executor-backend", "ray"]
        launch.notes.append("the instance spans hosts: start a Ray cluster first (docs/vllm.md)")
    launch.notes.append("ranks follow CUDA_VISIBLE_DEVICES, so the order is the stage order")
    return launch


def plan_launches(plan: Plan, hosts: dict[str, str] | None = None) -> list[VllmLaunch]:
    launches = [vllm_launch(plan, i, hosts=hosts) for i in range(len(plan.instances))]
    roles = {ln.role for ln in launches}
    if "prefill" in roles and "decode" not in roles:
        raise LlmplanError("the plan has prefill instances but no decode instance; re-plan with --pd")
    return launches
