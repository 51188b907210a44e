"""Discrete-event cluster simulator built on the serving core.

``simulate(workload, SimConfig(instances=8, policy="slo-odbs"))`` returns a
:class:`~llmplan.metrics.types.RunResult` with one record per request (completed or rejected
with a reason), per-instance samples and counters (preemptions, padding_tokens,
mispredictions, kv_transfers, ...). The simulator is the engine loop with a virtual clock and
a cost-model executor; see :mod:`llmplan.runtime.sim.simulator`.
"""

from llmplan.runtime.sim.cluster import build_instances, cluster_from_plan, default_cluster, default_cost
from llmplan.runtime.sim.config import InstanceSpec, SimConfig
from llmplan.runtime.sim.pricing import CostExecutor, LinearCost, batch_shape, decode_run
from llmplan.runtime.sim.simulator import SimInstance, Simulation, simulate

__all__ = [
    "CostExecutor",
    "InstanceSpec",
    "LinearCost",
    "SimConfig",
    "SimInstance",
    "Simulation",
    "batch_shape",
    "build_instances",
    "cluster_from_plan",
    "decode_run",
    "default_cluster",
    "default_cost",
    "simulate",
]
