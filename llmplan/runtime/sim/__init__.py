"""Discrete-event cluster simulator built on the serving core.

The simulator is the engine loop (``Scheduler.schedule -> executor -> Scheduler.update``) with a
virtual clock and a cost-model executor (the planner's roofline, or a calibration profile),
so the batch policies, routers and scheduler it measures are the ones ``llmplan serve`` runs::

    from llmplan.runtime.sim import SimConfig, default_cluster, simulate
    from llmplan.workload import load_workload

    wl = load_workload("azure-conv")
    # 8 instances of llama-2-13b, one A100-80GB each (roofline cost, KV from memory left):
    res = simulate(wl, SimConfig(instances=8, policy="slo-odbs", predictor="noisy:0.8"))
    # the planner's HELR plan on a topology preset, replicated over the machine:
    specs, graph, plan = default_cluster("llama-2-13b", "preset:dgx-a100", "HELR")
    res = simulate(wl, SimConfig(instances=specs, topology=graph, router="least-loaded"))
    # prefill/decode disaggregation, KV moved over the topology's links:
    res = simulate(wl, SimConfig(instances=specs, topology=graph, disaggregation=(1, 1)))

``res`` is a :class:`~llmplan.metrics.types.RunResult`: one record per request (completed, or
rejected with a reason), per-instance samples every ``sample_interval_s`` and counters
(preemptions, padding tokens, mispredictions, KV transfers, ...). Runs of identical decode
steps are priced in closed form, exactly equal to stepping (see
:mod:`llmplan.runtime.sim.simulator`): the full Azure conv trace (19,366 requests) takes about
3 s of CPU (``benchmarks/sim_speed.py``).
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
