"""What a Plan turns into: an accelerate ``device_map``, a ``vllm serve`` line, a rich table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from llmplan.errors import LlmplanError
from llmplan.models.spec import ModelSpec
from llmplan.plan.types import Plan
from llmplan.plan.vllm import hosts, vllm_command, vllm_default_partition  # noqa: F401 - re-exported


def module_names(spec: ModelSpec) -> tuple[list[str], list[str], str, list[str]]:
    """(first-stage modules, last-stage modules, per-layer prefix, modules that follow the embeddings)."""
    if spec.family == "opt":
        return (
            ["model.decoder.embed_tokens", "model.decoder.embed_positions"],
            ["model.decoder.final_layer_norm", "lm_head"],
            "model.decoder.layers.",
            [],
        )
    if spec.family == "chatglm":
        return (
            ["transformer.embedding", "transformer.rotary_pos_emb"],
            ["transformer.encoder.final_layernorm", "transformer.output_layer"],
            "transformer.encoder.layers.",
            [],
        )
    # Llama, Mistral, Qwen2: rotary_emb holds only the inv_freq buffer; it runs before layer 0.
    return (["model.embed_tokens", "model.rotary_emb"], ["model.norm", "lm_head"], "model.layers.", [])


def device_map(plan: Plan, instance: int = 0) -> dict[str, int]:
    """HF accelerate ``device_map``: every module of the model on the CUDA ordinal of its stage.

    Pipeline stages map to devices; a TP group cannot be expressed in a device_map, so its
    first GPU hosts the stage. A device_map lives in one process: for a plan spanning hosts it
    raises (use the vLLM line, which runs across hosts). Tied LM heads (OPT) stay with the
    embeddings, as accelerate requires tied parameters on one device.
    """
    spec = ModelSpec.from_dict(plan.model_spec)
    stages = plan.instance_stages(instance)
    if len(hosts(plan, instance)) > 1:
        raise LlmplanError(
            f"the plan spans hosts {', '.join(hosts(plan, instance))}; an HF device_map is single-process "
            "(serve it with vLLM across hosts, or re-plan with --gpus on one host)"
        )
    first, last, layer_prefix, _ = module_names(spec)
    dev_first = stages[0].device
    dev_last = stages[-1].device
    dm: dict[str, int] = {name: dev_first for name in first}
    for st in stages:
        for i in range(st.layer_start, st.layer_end):
            dm[f"{layer_prefix}{i}"] = st.device
    for name in last:
        dm[name] = dev_first if (name == "lm_head" and spec.tie_word_embeddings) else dev_last
    return dm


def plan_table(plan: Plan, instance: int = 0, title: str | None = None) -> Table:
    stages = plan.instance_stages(instance)
    t = Table(title=title or f"{plan.model} on {plan.topology} -- {plan.mode}", title_justify="left")
    for col, just in (
        ("stage", "right"),
        ("GPUs", "left"),
        ("model", "left"),
        ("layers", "left"),
        ("weights GiB", "right"),
        ("KV GiB", "right"),
        ("free GiB", "right"),
        ("prefill ms", "right"),
        ("decode ms", "right"),
        ("next link", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for k, s in enumerate(stages):
        extras = []
        if k == 0:
            extras.append("+embed")
        if k == len(stages) - 1:
            extras.append("+head")
        t.add_row(
            str(k),
            ",".join(s.gpus),
            s.gpu_name.replace("NVIDIA ", "").replace("GeForce ", ""),
            f"{s.layer_start}-{s.layer_end - 1} ({s.layers}){' ' + ' '.join(extras) if extras else ''}",
            f"{s.weights_gib:.2f}",
            f"{s.kv_gib:.2f}",
            f"{s.free_gib:.2f}",
            f"{s.prefill_s * 1e3:.2f}",
            f"{s.decode_s * 1e3:.3f}",
            s.link_to_next or "-",
        )
    return t


def summary(plan: Plan) -> dict[str, Any]:
    m = plan.metrics
    return {
        "gpus": m.get("gpus", plan.num_gpus),
        "ttft_ms": round(m.get("ttft_s", 0.0) * 1e3, 2),
        "tpot_ms": round(m.get("tpot_s", 0.0) * 1e3, 3),
        "batch_latency_s": round(m.get("batch_latency_s", 0.0), 3),
    }
