"""What a bench run is told: :class:`BenchConfig` (from ``llmplan bench``'s flags) and the
simulated deployment it builds, :class:`Cluster`. Types only, so the runner and the job pool
import them without importing each other."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from llmplan.deployment import EngineArgs
from llmplan.progress import OnProgress as OnProgress  # re-exported: bench callers import it from here

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.plan.costmodel import IterationCost
    from llmplan.plan.types import Plan
    from llmplan.runtime.sim.config import InstanceSpec as SimInstance


# The main job compares like with like: three continuous-batching policies. UELLM's static
# SLO-ODBS pads every batch to its longest member and belongs in a static-vs-static comparison.
DEFAULT_POLICIES = ("fcfs", "slo-odbs-cb", "s3")
# ``--compare`` names that select a whole serving system (llmplan.bench.systems), not a policy.
SYSTEM_GPU = "A100-SXM-80GB"


@dataclass(slots=True)
class BenchConfig:
    trace: str = "azure"
    rate_scale: float = 1.0
    window: tuple[float, float | None] | None = None
    max_requests: int | None = None
    seed: int = 0
    slo: str = "proportional"
    model: str = "llama-2-13b"
    topology: str | None = None  # None: the plan's (with --plan), else preset:dgx-a100
    plan: str | None = None  # a saved plan file; None plans HELR on the topology
    # A deployment spec (llmplan.deployment) the run simulates instead of planning: from a
    # plan file (its instances, topology and scheduler settings) or from a server's
    # GET /v1/deployment (``bench --target --simulate``).
    deployment: dict[str, Any] | None = None
    plan_mode: str = "HELR"
    policies: list[str] = field(default_factory=lambda: list(DEFAULT_POLICIES))
    router: str = "round-robin"
    instances: int | None = None  # replicas of the plan's instance; None fills the topology
    predictor: str = "oracle"
    engine: EngineArgs = field(default_factory=EngineArgs)
    disaggregation: tuple[int, int] | None = None
    sweep_rates: list[float] | None = None  # absolute offered rates (req/s)
    sweep_target: float = 0.9
    calibration: str | None = None
    allow_profile_mismatch: bool = False
    # The serving engine whose per-step overhead prices each step (llmplan.opcost.engines);
    # None: the deployment spec's, else vllm (the simulator reproduces vLLM V1's scheduler).
    serving_engine: str | None = None
    record_token_times: bool = True
    command: str = ""
    # Joules in the report (llmplan.energy, modelled): "max" accounts every step at the maximum
    # SM clock; "greenserve" also runs EcoFreq clocks and EcoRoute; "off" skips it.
    energy: str = "max"
    # --repeat K: K seeds (seed, seed+1, ...) per label, reported as mean and 95% interval.
    repeat: int = 1
    # --warmup S: requests arriving in the first S seconds are left out of every statistic.
    warmup_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Cluster:
    """The simulated deployment: instance specs plus how they were derived (for the report)."""

    instances: list[SimInstance]  # empty for a system comparison (each system builds its own)
    description: dict[str, Any]
    cost_override: IterationCost | None = None  # a calibration profile pricing every instance
    graph: nx.Graph | None = None  # the topology, for KV-transfer links between GPUs
    plan: Plan | None = None  # the Plan the instances come from, when there is one
    device: str | None = None  # GPU model (or "cpu") when every instance runs on one kind


DEFAULT_TOPOLOGY = "preset:dgx-a100"
