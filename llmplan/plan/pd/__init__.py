"""P:D planning: how many prefill and decode instances, with which parallelism and GPUs.

Goal (DistServe): maximise goodput per GPU, where goodput is the highest request rate at
which at least ``attainment`` of the requests meet both the TTFT and the TPOT SLO.

Analytic model (every time comes from :mod:`llmplan.plan.costmodel`):

* **Prefill instance** -- an M/G/1 queue (Poisson arrivals split evenly over ``n_p``
  instances, one prompt at a time as in DistServe's analysis). Service time of a prompt of
  I tokens is its prefill time (PP stages run back to back for a batch, as in the
  simulator); its response adds the KV transfer to the decode instance
  (``I * kv_bytes_per_token`` over the link between them). Waiting time follows
  Pollaczek-Khinchine: ``P(W > 0) = rho`` and, given a wait, an exponential tail with mean
  ``E[W] / rho`` where ``E[W] = lambda E[S^2] / (2 (1 - rho))``. TTFT attainment averages
  ``P(W <= SLO - response(I))`` over the input-length distribution.
* **Decode instance** -- continuous batching: by Little's law the batch holds
  ``B = lambda_d * E[O] * TPOT(B)`` sequences (fixed point, TPOT increasing in B); the number
  in service fluctuates as Poisson(B) (M/G/inf), so TPOT attainment is
  ``P(TPOT(b) <= SLO)`` for ``b ~ Poisson(B)``, counting a batch beyond the instance's KV
  capacity or the engine's ``max_num_seqs`` as a violation (it would preempt or queue).
* Attainment of both SLOs is the product (TTFT and TPOT are driven by different instances).

Search: every (TP, PP) layout per GPU model that fits, for prefill and decode, and every
coprime ratio ``n_p:n_d`` up to 8:1 / 1:8 within the GPU budget; goodput by bisection on the
rate. Because arrivals split evenly, ``k`` copies of a unit have ``k`` times its goodput, so
goodput per GPU depends only on the ratio; the best unit is replicated until it serves
``--rate`` (when given and the GPUs allow). OR-Tools CP-SAT then
packs the chosen instances onto hosts so that no TP group spans hosts and as many decode
instances as possible share a host (fast KV transfer) with a prefill instance.

Modules: :mod:`~llmplan.plan.pd.model` (workload lengths and the queueing models),
:mod:`~llmplan.plan.pd.search` (layouts, ratios, goodput, capacity) and
:mod:`~llmplan.plan.pd.placement` (CP-SAT host packing). Replaying a plan in the simulator
(``--validate``) is :mod:`llmplan.bench.pd_validate`, above the simulator; the terminal
rendering is :mod:`llmplan.cli.plan_pd`.
"""

from llmplan.plan.pd.model import (
    Layout,
    LengthStats,
    PDOption,
    PDRequest,
    _capacity,
    _DecodeModel,
    _fewest_gpus,
    _goodput,
    _PrefillModel,
    load_length_stats,
)
from llmplan.plan.pd.placement import place_on_hosts
from llmplan.plan.pd.search import MAX_RATIO, PDResult, _gpu_groups, _layouts, plan_pd

__all__ = [
    "MAX_RATIO",
    "Layout",
    "LengthStats",
    "PDOption",
    "PDRequest",
    "PDResult",
    "_DecodeModel",
    "_PrefillModel",
    "_capacity",
    "_fewest_gpus",
    "_goodput",
    "_gpu_groups",
    "_layouts",
    "load_length_stats",
    "place_on_hosts",
    "plan_pd",
]
