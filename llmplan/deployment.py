"""One deployment spec from ``plan`` to ``serve`` to ``bench``.

A :class:`DeploymentSpec` says what runs: the model and its precision, where (topology and
device), the instances with their stages and parallelism, the scheduler settings
(:class:`EngineArgs`, the same flags with the same defaults in ``llmplan serve`` and
``llmplan bench``), the router, the admission order, the KV store and the cost profile the
simulator prices it with. ``llmplan plan --out`` writes one (inside the plan file),
``llmplan serve --config`` and ``llmplan bench --config`` read it, a running server shows
its own at ``GET /v1/deployment``, and every ``report.json`` stores the spec each run
simulated or measured. Pure data and validation; files are read and written at the edges
(:func:`load_spec`, :meth:`DeploymentSpec.save`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.roles import ROLES, Role, parse_role

SPEC_KIND = "llmplan-deployment"
SPEC_VERSION = 1
DTYPES = ("float32", "bfloat16", "float16", "fp8", "int8", "int4")
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def canonical_dtype(name: str, what: str = "dtype") -> str:
    key = str(name).strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise LlmplanError(f"{what} {name!r} is unknown; use one of {', '.join(DTYPES)}")
    return key


@dataclass(slots=True)
class EngineArgs:
    """The scheduler and engine settings ``serve`` runs and ``bench`` simulates (vLLM's names).

    One class, so the two commands cannot drift: the flags of both are generated from these
    fields (``llmplan.cli.engine_args``), with these defaults. vLLM V1's defaults: chunked
    prefill on, 256 sequences, an 8192-token budget per step.
    """

    policy: str = "fcfs"
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    chunked_prefill: bool = True
    block_size: int = 16
    max_model_len: int | None = None  # None: the model's context (capped by the KV pool)

    def validate(self) -> EngineArgs:
        from llmplan.batch import ALIASES, POLICIES

        if self.policy.lower() not in POLICIES and self.policy.lower() not in ALIASES:
            known = ", ".join(sorted(POLICIES))
            raise LlmplanError(f"scheduler policy {self.policy!r} is unknown; use one of {known}")
        for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise LlmplanError(f"{name} must be a positive integer (got {v!r})")
        if self.max_model_len is not None and (
            isinstance(self.max_model_len, bool)
            or not isinstance(self.max_model_len, int)
            or self.max_model_len < 2
        ):
            raise LlmplanError(f"max_model_len must be an integer >= 2 (got {self.max_model_len!r})")
        if not isinstance(self.chunked_prefill, bool):
            raise LlmplanError(f"chunked_prefill must be true or false (got {self.chunked_prefill!r})")
        return self


@dataclass(slots=True)
class StageSpec:
    """Consecutive decoder layers ``[layer_start, layer_end)`` on a tensor-parallel GPU group."""

    gpus: list[str]
    layer_start: int
    layer_end: int

    @property
    def tp(self) -> int:
        return max(1, len(self.gpus))


@dataclass(slots=True)
class InstanceSpec:
    """One serving instance: its role, its pipeline stages, and its parallelism."""

    name: str
    role: Role = "both"  # "colocated" in a spec file is read as "both"
    stages: list[StageSpec] = field(default_factory=list)
    tp: int = 1
    pp: int = 1
    ep: int = 1  # expert parallelism (MoE); the planner fills it when it plans experts
    num_kv_blocks: int | None = None  # KV pool in blocks of engine.block_size; None: from memory

    @property
    def gpus(self) -> list[str]:
        return [g for s in self.stages for g in s.gpus]


@dataclass(slots=True)
class DeploymentSpec:
    model: str
    instances: list[InstanceSpec]
    weight_dtype: str = "bfloat16"
    kv_dtype: str | None = None  # None: the weights' dtype
    topology: str | None = None  # preset:NAME or file:PATH; None for a CPU server
    device: str | None = None  # GPU model ("A100-SXM-80GB") or "cpu"
    engine: EngineArgs = field(default_factory=EngineArgs)
    router: str = "round-robin"
    admission: str | None = None  # front-end queue order; None: no front end
    kv_store: str | None = None
    cost_profile: str | None = None  # a calibration profile; None: the planner's roofline
    # The serving engine whose per-step overhead prices each step (llmplan.opcost.engines):
    # llmplan | vllm | sglang | trtllm. A plan's `vllm serve` line and the simulator model vLLM.
    serving_engine: str = "vllm"
    plan_mode: str | None = None
    source: str = ""  # who wrote it: "llmplan plan", "llmplan serve", "llmplan bench"
    version: int = SPEC_VERSION

    # ------------------------------------------------------------------ validation
    def validate(self) -> DeploymentSpec:
        if not isinstance(self.model, str) or not self.model.strip():
            raise LlmplanError('the deployment names no model; set "model" (a catalog name or a path)')
        self.weight_dtype = canonical_dtype(self.weight_dtype, "weight_dtype")
        if self.kv_dtype is not None:
            self.kv_dtype = canonical_dtype(self.kv_dtype, "kv_dtype")
        if not self.instances:
            raise LlmplanError('the deployment has no instances; give at least one under "instances"')
        names = [i.name for i in self.instances]
        if len(set(names)) != len(names):
            raise LlmplanError(f"instance names repeat ({', '.join(names)}); give each instance its own name")
        for inst in self.instances:
            if isinstance(inst.role, str) and inst.role.strip().lower() == "colocated":
                inst.role = parse_role(inst.role)
            if inst.role not in ROLES:
                raise LlmplanError(
                    f"instance {inst.name}: role {inst.role!r} is unknown; use {', '.join(ROLES)}"
                )
            for k in ("tp", "pp", "ep"):
                v = getattr(inst, k)
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise LlmplanError(f"instance {inst.name}: {k} must be a positive integer (got {v!r})")
            for s in inst.stages:
                if not 0 <= s.layer_start < s.layer_end:
                    raise LlmplanError(
                        f"instance {inst.name}: stage layers {s.layer_start}-{s.layer_end} are empty or "
                        "negative; give layer_start < layer_end"
                    )
        roles = {i.role for i in self.instances}
        if roles != {"both"} and not ({"prefill", "decode"} <= roles and "both" not in roles):
            raise LlmplanError(
                "instance roles mix colocated and P/D or lack one side; use all 'both', or prefill + decode"
            )
        self.engine.validate()
        from llmplan.opcost.engines import canonical_engine

        self.serving_engine = canonical_engine(self.serving_engine, "serving_engine")
        from llmplan.routing import router_names

        if self.router.lower() not in router_names():
            raise LlmplanError(f"router {self.router!r} is unknown; use one of {', '.join(router_names())}")
        return self

    # ------------------------------------------------------------------ views
    @property
    def roles(self) -> list[str]:
        return [i.role for i in self.instances]

    @property
    def pd(self) -> tuple[int, int] | None:
        r = self.roles
        return (r.count("prefill"), r.count("decode")) if "prefill" in r else None

    def summary(self) -> str:
        """One line: model, precision, where, instances and the scheduler settings."""
        e = self.engine
        where = self.topology or self.device or "?"
        shape = ", ".join(f"{i.name}:{i.role}:tp{i.tp}pp{i.pp}" for i in self.instances)
        return (
            f"{self.model} ({self.weight_dtype}) on {where}: {len(self.instances)} instance(s) [{shape}], "
            f"{e.policy}, max_num_seqs {e.max_num_seqs}, budget {e.max_num_batched_tokens}, "
            f"chunked prefill {'on' if e.chunked_prefill else 'off'}, router {self.router}"
        )

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"kind": SPEC_KIND, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> Path:
        from llmplan.fileio import write_text_atomic

        return write_text_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: Any, where: str = "the deployment") -> DeploymentSpec:
        if not isinstance(d, dict):
            raise LlmplanError(f"{where} is not a JSON object; write it with `llmplan plan --out`")
        d = dict(d)
        kind = d.pop("kind", SPEC_KIND)
        if kind != SPEC_KIND:
            raise LlmplanError(
                f"{where} is a {kind!r}, not a {SPEC_KIND}; write one with `llmplan plan --out`"
            )
        version = d.get("version", SPEC_VERSION)
        if not isinstance(version, int) or version > SPEC_VERSION:
            raise LlmplanError(
                f"{where} is spec v{version}, newer than this llmplan (v{SPEC_VERSION}); upgrade"
            )
        _no_unknown(d, cls, where)
        try:
            eng = d.get("engine") or {}
            if not isinstance(eng, dict):
                raise TypeError("engine is not an object")
            _no_unknown(eng, EngineArgs, f"{where}: engine")
            insts = []
            for i in d.get("instances") or []:
                if not isinstance(i, dict):
                    raise TypeError("an instance is not an object")
                _no_unknown(i, InstanceSpec, f"{where}: instance")
                stages = []
                for s in i.get("stages") or []:
                    _no_unknown(s, StageSpec, f"{where}: stage")
                    stages.append(StageSpec(list(s["gpus"]), int(s["layer_start"]), int(s["layer_end"])))
                insts.append(InstanceSpec(**{**i, "stages": stages}))
            spec = cls(**{**d, "engine": EngineArgs(**eng), "instances": insts})
        except (KeyError, TypeError, ValueError) as exc:
            raise LlmplanError(f"{where} is malformed ({exc}); write it with `llmplan plan --out`") from None
        return spec.validate()

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_plan(cls, plan: Any, engine: EngineArgs | None = None, **kw: Any) -> DeploymentSpec:
        """The spec of a :class:`~llmplan.plan.types.Plan`: its instances as planned."""
        insts = []
        for k, ip in enumerate(plan.instances):
            prefix = {"prefill": "p", "decode": "d"}.get(ip.role, "i")
            stages = [StageSpec(list(s.gpus), s.layer_start, s.layer_end) for s in ip.stages]
            tp = max((s.tp for s in stages), default=1)
            # vLLM's --enable-expert-parallel spreads the experts over the TP group.
            ep = tp if (plan.metrics or {}).get("expert_parallel") else 1
            insts.append(InstanceSpec(f"{prefix}{k}", ip.role, stages, tp=tp, pp=max(1, len(stages)), ep=ep))
        gpu = next((s.gpu_name for ip in plan.instances for s in ip.stages if s.gpu_name), None)
        ms = plan.model_spec or {}
        dtype = ms.get("weight_dtype") or ms.get("dtype") or "bfloat16"
        kv = ms.get("kv_dtype") or None
        kw.setdefault("kv_dtype", None if kv in (None, "", "auto") else str(kv))
        if engine is None:
            from llmplan.plan.vllm import served_limits

            # The limits the plan's `vllm serve` line serves with, so that bench --plan simulates
            # the system the plan prints (flags override them, as for any spec field).
            seqs, max_len = served_limits(plan)
            engine = EngineArgs(max_num_seqs=seqs, max_model_len=max_len).validate()
        base = dict(
            model=plan.model, instances=insts, topology=plan.topology or None, device=gpu,
            weight_dtype=str(dtype), plan_mode=plan.mode, engine=engine,
            serving_engine=str((plan.params or {}).get("serving_engine") or "vllm"), source="llmplan plan",
        )  # fmt: skip
        base.update(kw)
        return cls(**base).validate()

    def with_engine(self, **changes: Any) -> DeploymentSpec:
        """A copy whose engine settings have ``changes`` (flags overriding the file)."""
        return replace(self, engine=replace(self.engine, **changes).validate())


def _no_unknown(d: Any, cls: type, where: str) -> None:
    if not isinstance(d, dict):
        raise LlmplanError(f"{where} is not a JSON object; write it with `llmplan plan --out`")
    known = {f.name for f in fields(cls)}
    extra = sorted(set(d) - known)
    if extra:
        raise LlmplanError(
            f"{where} has unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}"
        )


def load_spec(path: str | Path) -> DeploymentSpec:
    """A spec from a file: a spec JSON, or a plan file from ``llmplan plan --out`` (its
    ``deployment`` section, or the plan's instances when the plan predates the spec)."""
    p = Path(path)
    where = f"--config {p}"
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise LlmplanError(f"{where} does not exist; write one with `llmplan plan --out {p}`") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise LlmplanError(f"{where} cannot be read ({type(exc).__name__}); give a JSON file") from None
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text)
        else:
            d = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line
        raise LlmplanError(f"{where} is not valid JSON/YAML ({type(exc).__name__}); rewrite it") from None
    if isinstance(d, dict) and "deployment" in d and "instances" in d and "mode" in d:
        return DeploymentSpec.from_dict(d["deployment"], where)
    if isinstance(d, dict) and d.get("kind") != SPEC_KIND and "mode" in d and "model_spec" in d:
        from llmplan.plan.types import Plan

        return DeploymentSpec.from_plan(Plan.from_dict(d))
    return DeploymentSpec.from_dict(d, where)


def plan_of(path: str | Path) -> Any:
    """The :class:`~llmplan.plan.types.Plan` inside a plan file, or None for a bare spec."""
    p = Path(path)
    try:
        d = json.loads(p.read_text()) if p.suffix not in (".yaml", ".yml") else None
    except (OSError, ValueError):
        return None
    if d is None:
        import yaml

        d = yaml.safe_load(p.read_text())
    if isinstance(d, dict) and "mode" in d and "model_spec" in d:
        from llmplan.plan.types import Plan

        return Plan.from_dict({k: v for k, v in d.items() if k != "deployment"})
    return None


def save_plan(plan: Any, path: str | Path, engine: EngineArgs | None = None) -> Path:
    """``llmplan plan --out``: the plan, with its :class:`DeploymentSpec` under ``deployment``
    (read back by ``serve --config``/``bench --config`` and ``--plan``)."""
    from llmplan.fileio import write_text_atomic

    p = Path(path)
    d = plan.to_dict()
    spec = DeploymentSpec.from_plan(plan, engine)
    d["deployment"] = spec.to_dict()
    if p.suffix in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(d, sort_keys=False)
    else:
        text = json.dumps(d, indent=2)
    return write_text_atomic(p, text)
