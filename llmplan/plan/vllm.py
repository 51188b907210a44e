"""A plan instance as a vLLM launch: the one place that maps stages to vLLM's flags.

``llmplan plan`` prints :func:`vllm_command`; ``llmplan serve --engine vllm`` starts
processes from :func:`vllm_launch`. Mapping:

* S stages of T GPUs each      -> ``--pipeline-parallel-size S --tensor-parallel-size T``
* GPUs in stage order          -> ``CUDA_VISIBLE_DEVICES`` (vLLM ranks follow it)
* an uneven layer split        -> ``VLLM_PP_LAYER_PARTITION``
* stages on several hosts      -> ``--distributed-executor-backend ray``, device lists per host
* the plan's reference batch   -> ``--max-num-seqs``, ``--max-model-len``
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmplan.errors import LlmplanError
from llmplan.models.spec import ModelSpec
from llmplan.plan.types import Plan
from llmplan.roles import Role


def vllm_default_partition(layers: int, pp: int) -> list[int]:
    """vLLM's own split (``get_pp_indices``): the remainder goes to the stages before the last."""
    parts = [layers // pp] * pp
    for i in range(2, layers % pp + 2):
        parts[-i] += 1
    return parts


def served_limits(plan: Plan, spec: ModelSpec | None = None) -> tuple[int, int]:
    """(max sequences, max model length) the plan is sized for and served with.

    The one source for the ``vllm serve`` line's ``--max-num-seqs``/``--max-model-len`` and the
    engine settings of the deployment spec ``plan --out`` writes, so that a plan served live
    and the same plan simulated by ``bench --plan`` admit the same requests. The length is the
    plan's ``--max-model-len`` (else its input + output), never above the model's context."""
    wl = plan.workload
    if spec is None:
        spec = ModelSpec.from_dict(plan.model_spec) if plan.model_spec else None
    limit = wl.max_model_len or wl.input_len + wl.output_len
    if spec is not None:
        limit = min(limit, int(spec.max_position_embeddings))
    return int(wl.max_batch), int(limit)


def hosts(plan: Plan, instance: int = 0) -> list[str]:
    """Hosts of an instance's stages, in stage order (one entry per host)."""
    out: list[str] = []
    for st in plan.instance_stages(instance):
        if st.host and st.host not in out:
            out.append(st.host)
    return out


@dataclass(slots=True)
class VllmLaunch:
    name: str
    role: Role  # "both" is colocated; see llmplan.roles
    model: str
    tensor_parallel: int
    pipeline_parallel: int
    devices: dict[str, list[int]]  # host -> CUDA ordinals there, in stage order
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # flags after `vllm serve MODEL`
    notes: list[str] = field(default_factory=list)

    @property
    def multi_node(self) -> bool:
        return len(self.devices) > 1

    def command(self) -> str:
        env = [f"{k}={v}" for k, v in self.env.items()]
        return " ".join([*env, "vllm serve", self.model, *self.args])


def vllm_launch(plan: Plan, instance: int = 0) -> VllmLaunch:
    """Raise LlmplanError, naming the reason, when vLLM cannot express the layout."""
    spec = ModelSpec.from_dict(plan.model_spec)
    stages = plan.instance_stages(instance)
    tps = {len(s.gpus) for s in stages}
    if len(tps) != 1:
        raise LlmplanError("stages use different TP degrees; vLLM needs one TP size for all pipeline stages")
    if len({s.gpu_name for s in stages}) != 1:
        raise LlmplanError(
            "stages mix GPU models; vLLM assumes identical GPUs (use the HF device_map instead)"
        )
    tp, pp = tps.pop(), len(stages)
    role = plan.instances[instance].role
    devices: dict[str, list[int]] = {}
    for s in stages:
        devices.setdefault(s.host, []).extend(s.device + k for k in range(len(s.gpus)))
    launch = VllmLaunch(
        name=f"{'vllm' if role == 'both' else role}{instance}",
        role=role,
        model=spec.hf_name or spec.name,
        tensor_parallel=tp,
        pipeline_parallel=pp,
        devices=devices,
    )
    if spec.family == "chatglm":
        launch.notes.append("ChatGLM needs --trust-remote-code")
    if launch.multi_node:
        per_host = "; ".join(f"{h}: CUDA_VISIBLE_DEVICES={','.join(map(str, d))}" for h, d in devices.items())
        names = list(devices)
        launch.notes.append(
            f"multi-node: start a Ray cluster over {', '.join(names)} (head on {names[0]}) "
            f"and run this there; per host, in stage order: {per_host}"
        )
    else:
        launch.env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, next(iter(devices.values()))))
    counts = [s.layers for s in stages]
    if pp > 1 and counts != vllm_default_partition(spec.num_hidden_layers, pp):
        launch.env["VLLM_PP_LAYER_PARTITION"] = ",".join(map(str, counts))
        launch.notes.append("the plan's uneven layer split is passed via VLLM_PP_LAYER_PARTITION")
    max_num_seqs, max_model_len = served_limits(plan, spec)
    launch.args = [
        "--tensor-parallel-size",
        str(tp),
        "--pipeline-parallel-size",
        str(pp),
        "--max-num-seqs",
        str(max_num_seqs),
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        spec.dtype if spec.dtype in ("bfloat16", "float16", "float32") else "auto",
    ]
    launch.args += _precision_args(spec, launch.notes)
    if plan.metrics.get("expert_parallel") and tp > 1:
        launch.args.append("--enable-expert-parallel")
        launch.notes.append("experts are sharded whole across the TP group (EP)")
    if spec.family == "chatglm":
        launch.args.append("--trust-remote-code")
    if launch.multi_node:
        launch.args += ["--distributed-executor-backend", "ray"]
    launch.notes.append("ranks follow CUDA_VISIBLE_DEVICES, so the order is the stage order")
    return launch


def _precision_args(spec: ModelSpec, notes: list[str]) -> list[str]:
    """vLLM's own flags for the plan's weight / KV precision (precision term)."""
    args: list[str] = []
    w, ckpt = spec.weight_precision, spec.checkpoint_quant
    if w == ckpt and ckpt:
        notes.append(f"the checkpoint is {ckpt}-quantized: vLLM reads its quantization_config")
    elif ckpt and w != ckpt:
        notes.append(
            f"the plan prices {w} weights but {spec.hf_name or spec.name} is a {ckpt} checkpoint: "
            f"serve a {w} checkpoint of it"
        )
    elif w == "fp8":
        args += ["--quantization", "fp8"]
        notes.append("--quantization fp8 quantizes the bf16 checkpoint on load (dynamic per-tensor scales)")
    elif w == "int4":
        args += ["--quantization", "awq"]
        notes.append("int4 is served from an AWQ checkpoint of the model (or --quantization gptq for GPTQ)")
    elif w == "int8":
        notes.append(
            "int8 needs a W8A8 checkpoint (compressed-tensors); vLLM reads its quantization from the config"
        )
    if spec.kv_dtype == "fp8":
        args += ["--kv-cache-dtype", "fp8"]
    return args


def vllm_command(plan: Plan, instance: int = 0) -> tuple[str | None, str]:
    """(command, note): the ``vllm serve`` line, or None and the reason vLLM cannot run it."""
    try:
        launch = vllm_launch(plan, instance)
    except LlmplanError as exc:
        return None, str(exc)
    return launch.command(), "; ".join(launch.notes)


def plan_launches(plan: Plan) -> list[VllmLaunch]:
    launches = [vllm_launch(plan, i) for i in range(len(plan.instances))]
    roles = {ln.role for ln in launches}
    if "prefill" in roles and "decode" not in roles:
        raise LlmplanError("the plan has prefill instances but no decode instance; re-plan with --pd")
    return launches
