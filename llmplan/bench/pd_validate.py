"""``llmplan plan --pd --validate``: replay a P:D plan in the simulator and compare attainment.

It lives in ``bench``, above both :mod:`llmplan.plan.pd` and :mod:`llmplan.runtime.sim`, because
the planner must not import the simulator that prices its plans (the layer contract in
docs/architecture.md). SLOs are counted by :func:`llmplan.metrics.request_frame`, as for every
other run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmplan import progress
from llmplan.metrics import request_frame
from llmplan.plan.pd import LengthStats, PDRequest, PDResult
from llmplan.runtime.sim import SimConfig, cluster_from_plan, simulate
from llmplan.workload.types import SLO, RequestSpec, Workload

if TYPE_CHECKING:
    import networkx as nx

    from llmplan.models.spec import ModelSpec


def validate_in_simulator(
    result: PDResult,
    spec: ModelSpec,
    graph: nx.Graph,
    stats: LengthStats,
    req: PDRequest,
    num_requests: int | None = None,
    seed: int = 0,
) -> PDResult:
    """Replay a Poisson workload at the predicted goodput in ``llmplan.runtime.sim``.

    One simulated instance per plan instance (``cluster_from_plan``: the same cost model),
    KV moved over the topology; lengths are drawn from the workload's length samples.
    Records predicted vs simulated attainment (both SLOs) side by side.
    """
    rate = result.best.goodput
    # Long enough for decode batches to reach steady state (a request lives ~E[O] * TPOT);
    # attainment is counted over arrivals after that warm-up.
    warmup = stats.mean_output * req.slo_tpot_s
    if num_requests is None:
        num_requests = int(min(6000, max(800, rate * 4 * warmup)))
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    idx = rng.integers(0, len(stats.inputs), num_requests)
    slo = SLO(ttft_s=req.slo_ttft_s, tpot_s=req.slo_tpot_s)
    reqs = [
        RequestSpec(
            rid=k,
            arrival_s=float(t[k]),
            prompt_tokens=max(1, int(stats.inputs[idx[k]])),
            output_tokens=max(1, int(stats.outputs[idx[k]])),
            slo=slo,
        )
        for k in range(num_requests)
    ]
    wl = Workload(name="pd-validate", requests=reqs, source=stats.source)
    specs = cluster_from_plan(result.plan, graph)
    with progress.task("--validate: simulating the plan", total=len(wl), unit="requests") as bar:
        run = simulate(
            wl,
            SimConfig(
                instances=specs,
                topology=graph,
                model=spec.name,
                kv_bytes_per_token=float(spec.kv_bytes_per_token),
                seed=seed,
            ),
            progress=lambda done, total: bar.update(completed=done, total=total),
        )
    frame = request_frame(run)
    if t[-1] > 2 * warmup:
        frame = frame[frame["arrival_s"] >= warmup]
    n = max(1, len(frame))
    result.validation = {
        "rate": rate,
        "requests": num_requests,
        "predicted_attainment": result.best.attainment,
        "simulated_attainment": int(frame["slo_met"].sum()) / n,
        "predicted_ttft_attainment": result.best.ttft_att,
        "simulated_ttft_attainment": int((frame["ttft_met"] == 1).sum()) / n,
        "predicted_tpot_attainment": result.best.tpot_att,
        "simulated_tpot_attainment": int((frame["tpot_met"] == 1).sum()) / n,
    }
    return result
