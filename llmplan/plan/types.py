"""The Plan: what `llmplan plan` decides and later commands (`serve`, `bench`, the simulator) read.

Saved as JSON or YAML (``Plan.save(path)`` picks by suffix; ``Plan.load(path)``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.fileio import write_text_atomic
from llmplan.plan.filecheck import check_plan_dict
from llmplan.roles import Role, parse_role

PLAN_VERSION = 1


@dataclass(frozen=True, slots=True)
class PlanWorkload:
    """The reference workload a plan is sized and priced for.

    max_batch sequences of input_len prompt tokens and output_len generated tokens:
    the KV reserve is max_batch * (input_len + output_len) tokens, unless
    ``kv_tokens_per_request`` overrides the per-request share (e.g. sized from a resource
    profile's memory prediction, ``llmplan plan --kv-profile``).
    """

    max_batch: int = 32
    input_len: int = 512
    output_len: int = 256
    kv_tokens_per_request: int | None = None
    max_model_len: int | None = None  # the served context limit (vLLM --max-model-len); None: input + output

    @property
    def kv_tokens(self) -> int:
        per_request = self.kv_tokens_per_request
        if per_request is None:
            per_request = self.input_len + self.output_len
        return self.max_batch * per_request


def check_context(spec: Any, wl: PlanWorkload) -> int:
    """The context limit a plan serves, or a one-line refusal naming both numbers.

    ``input + output`` must fit the model's ``max_position_embeddings`` and, when given,
    ``--max-model-len`` (which itself may not exceed the model's limit).
    """
    limit = int(spec.max_position_embeddings)
    if wl.max_model_len is not None:
        if wl.max_model_len > limit:
            raise LlmplanError(
                f"--max-model-len {wl.max_model_len} exceeds {spec.name}'s max_position_embeddings {limit}; "
                f"use --max-model-len {limit} or less"
            )
        limit, what = wl.max_model_len, "--max-model-len"
    else:
        what = "max_position_embeddings"
    need = wl.input_len + wl.output_len
    if need > limit:
        raise LlmplanError(
            f"input {wl.input_len} + output {wl.output_len} = {need} tokens exceed {spec.name}'s {what} "
            f"{limit}; lower --input-len/--output-len"
            + (" or raise --max-model-len" if what == "--max-model-len" else "")
        )
    return wl.max_model_len or need


@dataclass(slots=True)
class StagePlan:
    gpus: list[str]  # topology node ids, TP group ("GPU3"); one for pure pipeline stages
    layer_start: int
    layer_end: int  # exclusive
    gpu_name: str = ""
    weights_gib: float = 0.0
    kv_gib: float = 0.0
    free_gib: float = 0.0
    prefill_s: float = 0.0  # this stage's share of one prompt's prefill
    decode_s: float = 0.0  # this stage's share of one decode step of the reference batch
    link_to_next: str = ""  # link class to the next stage ("PIX", "NV18", ...)
    host: str = ""  # the topology's host of the stage's GPUs
    local_index: int | None = None  # CUDA ordinal on that host (differs from the index on multi-node beds)

    @property
    def layers(self) -> int:
        return self.layer_end - self.layer_start

    @property
    def gpu_indices(self) -> list[int]:
        return [int(g.removeprefix("GPU")) for g in self.gpus]

    @property
    def device(self) -> int:
        """CUDA ordinal of the stage's first GPU on its host."""
        return self.local_index if self.local_index is not None else self.gpu_indices[0]


@dataclass(slots=True)
class InstancePlan:
    role: Role = "both"  # "both" is colocated (prefill and decode); see llmplan.roles
    stages: list[StagePlan] = field(default_factory=list)

    @property
    def gpus(self) -> list[str]:
        return [g for s in self.stages for g in s.gpus]


@dataclass(slots=True)
class Plan:
    model: str
    model_spec: dict[str, Any]
    topology: str
    mode: str  # HE | LR | HELR | PD
    instances: list[InstancePlan]
    workload: PlanWorkload = field(default_factory=PlanWorkload)
    a1: float = 0.5
    a2: float = 0.5
    metrics: dict[str, Any] = field(default_factory=dict)
    explanation: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    pd: dict[str, Any] | None = None
    version: int = PLAN_VERSION

    @property
    def stages(self) -> list[StagePlan]:
        return self.instances[0].stages

    def instance_stages(self, instance: int = 0) -> list[StagePlan]:
        if not 0 <= instance < len(self.instances):
            raise LlmplanError(
                f"plan has {len(self.instances)} instance(s); instance {instance} does not exist"
            )
        return self.instances[instance].stages

    @property
    def num_gpus(self) -> int:
        return sum(len(i.gpus) for i in self.instances)

    # ---- serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        try:
            if d.get("version", PLAN_VERSION) > PLAN_VERSION:
                raise LlmplanError(
                    f"plan format v{d['version']} is newer than this llmplan (v{PLAN_VERSION}); "
                    "upgrade llmplan"
                )
            instances = [
                InstancePlan(
                    role=parse_role(i.get("role", "both"), "plan instance role"),
                    stages=[StagePlan(**s) for s in i["stages"]],
                )
                for i in d["instances"]
            ]
            return cls(
                model=d["model"],
                model_spec=d["model_spec"],
                topology=d.get("topology", ""),
                mode=d["mode"],
                instances=instances,
                workload=PlanWorkload(**d.get("workload", {})),
                a1=d.get("a1", 0.5),
                a2=d.get("a2", 0.5),
                metrics=d.get("metrics", {}),
                explanation=list(d.get("explanation", [])),
                params=d.get("params", {}),
                pd=d.get("pd"),
                version=d.get("version", PLAN_VERSION),
            )
        except (KeyError, TypeError) as exc:
            raise LlmplanError(
                f"not a llmplan plan ({exc}); create one with `llmplan plan --out plan.json`"
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        text = self.to_yaml() if p.suffix in (".yaml", ".yml") else self.to_json()
        return write_text_atomic(p, text)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        from llmplan.validate import read_text

        p = Path(path)
        text = read_text(p, "plan file", f"create it with `llmplan plan --out {p}`")
        try:
            if p.suffix in (".yaml", ".yml"):
                import yaml

                d = yaml.safe_load(text)
            else:
                d = json.loads(text)
        except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
            raise LlmplanError(
                f"plan file {str(p)!r} cannot be parsed ({type(exc).__name__}); "
                "regenerate it with `llmplan plan --out`"
            ) from None
        if not isinstance(d, dict):
            raise LlmplanError(
                f"plan file {str(p)!r} is not a plan object; regenerate it with `llmplan plan`"
            )
        checked = check_plan_dict(
            d, str(p), version=PLAN_VERSION, stage_fields={f.name for f in fields(StagePlan)},
            workload_fields={f.name for f in fields(PlanWorkload)},
        )
        return cls.from_dict(checked)
