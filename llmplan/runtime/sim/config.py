"""Simulator configuration and the instances it builds."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmplan.plan.costmodel import IterationCost
from llmplan.roles import Role


@dataclass(slots=True)
class InstanceSpec:
    """One serving instance: its iteration cost, KV pool and role."""

    name: str
    cost: IterationCost
    num_blocks: int
    role: Role = "both"  # "both" is colocated (prefill and decode); see llmplan.roles
    gpus: tuple[str, ...] = ()  # topology node ids (for KV-transfer links), when known


@dataclass(slots=True)
class SimConfig:
    """Everything a simulation run needs besides the workload.

    Instances: ``instances`` is a count of identical colocated instances (each priced by
    ``cost`` or, when ``cost`` is None, by the planner's roofline for ``model`` on one ``gpu``
    with ``tp``-way tensor parallelism), or an explicit list of :class:`InstanceSpec` (e.g.
    from :func:`llmplan.runtime.sim.cluster.cluster_from_plan`). ``cost`` overrides every
    instance's cost (a calibration profile). ``num_blocks`` overrides KV capacity.

    Disaggregation: ``disaggregation=(n_prefill, n_decode)`` splits a count of instances into
    prefill and decode roles (explicit specs carry their own roles). Each request's KV moves
    from its prefill to its decode instance in ``kv_transfer_time(prompt_tokens, src, dst)``
    seconds; by default ``latency + prompt_tokens * kv_bytes_per_token / bandwidth`` over the
    topology link between the two instances' first GPUs when a graph is given, else over
    ``kv_link_gbps``. The transfer starts when the prefill finishes (push); the prefill
    instance keeps the KV blocks booked until it completes, and the decode instance's router
    picks the destination at that moment.
    """

    instances: int | Sequence[InstanceSpec] = 1
    policy: str = "fcfs"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    router: str = "round-robin"
    router_kwargs: dict[str, Any] = field(default_factory=dict)
    # "oracle" | "noisy:<acc>" | a LengthPredictor | None. Used when the policy needs lengths.
    predictor: Any = "oracle"
    block_size: int = 16
    chunked_prefill: bool = False
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    watermark: float = 0.01
    max_model_len: int | None = None
    disaggregation: tuple[int, int] | None = None
    cost: IterationCost | None = None
    num_blocks: int | None = None
    model: str = "llama-2-13b"
    gpu: str = "A100-SXM-80GB"
    tp: int = 1
    kv_bytes_per_token: float | None = None  # None: from ``model``'s spec
    kv_link_gbps: float = 25.0  # GB/s when no topology graph is given (200 Gb/s InfiniBand)
    kv_link_latency_s: float = 10e-6
    topology: Any = None  # a networkx topology graph, for KV-transfer links between GPUs
    kv_transfer_time: Callable[[int, InstanceSpec, InstanceSpec], float] | None = None
    seed: int = 0
    record_token_times: bool = False
    sample_interval_s: float = 1.0
    # Price runs of identical decode steps in closed form (exactly equal to stepping; off
    # only to check that equality).
    fast_forward: bool = True
    # Extension points for prefix-aware routing and controllers (BanaServe):
    # prefix_cache(instance_name, spec) -> tokens of spec's prefix cached there; fills
    # InstanceLoad.cached_prefix_tokens in router snapshots.
    prefix_cache: Callable[[str, Any], int] | None = None
    # GPU-resident prefix cache in each instance's block manager (vLLM automatic prefix
    # caching; llmplan.runtime.core.blocks). It acts on requests with exact token ids
    # (RequestSpec.token_ids); without ``prefix_cache`` above, routers see its contents.
    prefix_caching: bool = True
    # The global KV store shared by every instance, the tier below the GPU prefix cache
    # (llmplan.runtime.sim.kvstore): its memory tier's capacity in GiB (None: no store) and the
    # host-to-GPU bandwidth its loads cross (GB/s; 25 ~ PCIe 4.0 x16).
    kv_store_gb: float | None = None
    kv_store_gbps: float = 25.0
    # Called as hook(simulation, now) at every sample tick, after sampling. A hook that changes
    # an instance must call simulation.materialize(instance, now) first.
    tick_hooks: list[Callable[[Any, float], None]] = field(default_factory=list)
    # Energy accounting and clock control (llmplan.energy.green.EnergyControl): joules per step,
    # and with mode "greenserve" per-iteration SM clocks (EcoFreq) and decode routing (EcoRoute).
    energy: Any = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for reports."""
        out: dict[str, Any] = {}
        for k in self.__slots__:  # type: ignore[attr-defined]
            v = getattr(self, k)
            if k == "instances" and not isinstance(v, int):
                v = [{"name": s.name, "role": s.role, "num_blocks": s.num_blocks} for s in v]
            elif k == "energy" and v is not None:
                v = getattr(v, "mode", type(v).__name__)
            elif k in ("cost", "topology", "kv_transfer_time", "prefix_cache") and v is not None:
                v = type(v).__name__
            elif k == "tick_hooks":
                v = [getattr(h, "__name__", type(h).__name__) for h in v]
            elif k == "predictor" and v is not None and not isinstance(v, str):
                v = getattr(v, "name", type(v).__name__)
            out[k] = v
        return out
