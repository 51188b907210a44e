"""UELLM's ablation, simulated: predictor, batching and device mapping switched on alone and together.

UELLM combines three parts: an output-length predictor, SLO- and length-aware batching
(SLO-ODBS, Algorithm 3-1) and a device mapping (HELR). Its ablation switches each on alone and
all together against a baseline with none. The same configurations (plus predictor and
batching together, since the predictor acts only through the batching) here, each run with
``--repeat`` seeds (Poisson arrivals and SLO draws redrawn, the same seeds for every
configuration, so differences are paired):

=============  ===========  ==========  ==============
config         predictor    batching    device mapping
=============  ===========  ==========  ==============
none           ``const:N``  FCFS        naive
+predictor     ``oracle``   FCFS        naive
+batching      ``const:N``  SLO-ODBS    naive
+mapping       ``const:N``  FCFS        HELR fill
+pred+batch    ``oracle``   SLO-ODBS    naive
all            ``oracle``   SLO-ODBS    HELR fill
=============  ===========  ==========  ==============

* **predictor off** is ``const:N`` (every request predicted ``N`` tokens: no information), on is
  the oracle (true output lengths; an upper bound for any learned predictor). Only policies
  that order or book by predicted length read it, so with FCFS it changes nothing by design;
  the ``+predictor`` column shows that rather than assuming it.
* **batching**, in two settings: *static* (``static-fcfs`` vs ``slo-odbs``: a batch holds its
  slots until its longest member finishes, UELLM's own setting, with its E2E-only deadlines
  ``--slo uellm``) and *continuous* (``fcfs`` vs ``slo-odbs-cb``, Algorithm 3-1 as the admission
  rule of an iteration-level batcher, proportional TTFT/TPOT SLOs).
* **device mapping off** is a naive fill: instances taken in GPU index order, each on the fewest
  next GPUs on which vLLM's default even pipeline split (``vllm_default_partition``) fits, TP=1
  -- what ``--pipeline-parallel-size k`` on GPUs 0..k-1, then the next ones, gives. On is the
  planner's HELR fill (``fill_plan``), the default of ``llmplan bench``.

Everything runs through :func:`llmplan.bench.runner.run_bench`; intervals and paired verdicts
are :mod:`llmplan.report.repeats`' (mean ± 95% t-interval; a difference whose interval contains
0 is a tie).

    python benchmarks/uellm_ablation.py                       # both settings, defaults below
    python benchmarks/uellm_ablation.py --setting continuous --n 600 --rate 60 --repeat 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

# (label, predictor on, batching on, mapping on)
CONFIGS: tuple[tuple[str, bool, bool, bool], ...] = (
    ("none", False, False, False),
    ("+predictor", True, False, False),
    ("+batching", False, True, False),
    ("+mapping", False, False, True),
    ("+pred+batch", True, True, False),
    ("all", True, True, True),
)
SETTINGS = {
    # setting: (baseline policy, UELLM policy, SLO spec)
    "static": ("static-fcfs", "slo-odbs", "uellm"),
    "continuous": ("fcfs", "slo-odbs-cb", "proportional"),
}
DEFAULT_RATE = {"static": 8.0, "continuous": 40.0}
METRICS = (
    "attainment_all",
    "goodput_rps",
    "throughput_rps",
    "ttft_p50_s",
    "ttft_p99_s",
    "tpot_p50_s",
    "tpot_p99_s",
    "e2e_p99_s",
)


def naive_plan(model: str, topology: str) -> Any:
    """Instances in GPU index order, each on the fewest next GPUs where vLLM's even pipeline split
    fits (TP=1); the GPUs left when the model no longer fits stay idle."""
    from llmplan.errors import InfeasibleError
    from llmplan.models import get_model_spec
    from llmplan.plan.costmodel import params_for_engine
    from llmplan.plan.helr import Placement
    from llmplan.plan.planner import placement_to_instance
    from llmplan.plan.problem import problem_from_graph, role_of
    from llmplan.plan.types import Plan
    from llmplan.plan.vllm import vllm_default_partition
    from llmplan.topology import load_topology

    spec = get_model_spec(model)
    graph = load_topology(topology)
    params = params_for_engine("vllm")
    problem = problem_from_graph(spec, graph, params=params)
    n, L = len(problem.gpus), problem.n_layers
    instances, metrics, start = [], [], 0
    while start < n:
        chosen = None
        for k in range(1, n - start + 1):
            order = list(range(start, start + k))
            counts = vllm_default_partition(L, k)
            caps = [problem.gpus[g].caps[role_of(i == 0, i == k - 1)] for i, g in enumerate(order)]
            if any(c > cap for c, cap in zip(counts, caps, strict=True)):
                continue
            m = problem.evaluate(order, counts)
            if m is not None:
                chosen = (order, counts, m)
                break
        if chosen is None:
            break
        order, counts, m = chosen
        pl = Placement(tuple(order), tuple(counts), m["latency_s"])
        instances.append(placement_to_instance(problem, pl, graph))
        metrics.append({"gpus": len(order), "ttft_s": m["ttft_s"], "tpot_s": m["tpot_s"],
                        "batch_latency_s": m["latency_s"], "prefill_bottleneck_s": m["beta_s"]})  # fmt: skip
        start += len(order)
    if not instances:
        raise InfeasibleError(f"{model} does not fit on {topology} with an even pipeline split")
    return Plan(
        model=spec.name, model_spec=spec.to_dict(), topology=topology, mode="HELR", instances=instances,
        metrics={"fill": True, "gpus": sum(m["gpus"] for m in metrics), "instances": metrics,
                 "unused_gpus": [problem.gpus[g].node for g in range(start, n)], "naive": True},
        explanation=["naive fill: GPUs in index order, vLLM's default even pipeline split, TP=1"],
        params={k: getattr(params, k) for k in params.__dataclass_fields__},
    )  # fmt: skip


def helr_plan(model: str, topology: str) -> Any:
    """The planner's HELR fill, as ``llmplan bench`` builds it without ``--plan``."""
    from llmplan.models import get_model_spec
    from llmplan.plan.costmodel import params_for_engine
    from llmplan.plan.planner import fill_plan
    from llmplan.topology import load_topology

    spec, graph = get_model_spec(model), load_topology(topology)
    return fill_plan(spec, graph, "HELR", topology=topology, params=params_for_engine("vllm"))


def layout(plan: Any) -> str:
    """Each instance as its stages (``+`` joins a stage's TP GPUs, ``|`` separates pipeline stages)."""
    return ", ".join(
        "[" + " | ".join(f"{'+'.join(s.gpus)}:{s.layer_end - s.layer_start}L" for s in inst.stages) + "]"
        for inst in plan.instances
    )


def run_setting(setting: str, args: argparse.Namespace, naive_path: str) -> dict[str, Any]:
    from llmplan.bench.config import BenchConfig
    from llmplan.bench.runner import run_bench

    base_policy, uellm_policy, slo = SETTINGS[setting]
    rate = args.rate if args.rate is not None else DEFAULT_RATE[setting]
    out: dict[str, Any] = {}
    for label, pred, batch, mapping in CONFIGS:
        policy = uellm_policy if batch else base_policy
        cfg = BenchConfig(
            trace=f"sharegpt:rate={rate:g}", max_requests=args.n, slo=slo, model=args.model,
            topology=args.topology, plan=None if mapping else naive_path, policies=[policy],
            predictor=args.predictor if pred else f"const:{args.const}", repeat=args.repeat, energy="off",
            record_token_times=False,
        )  # fmt: skip
        t = time.perf_counter()
        rep = run_bench(cfg, show_download_progress=False)
        out[label] = {
            "metrics": rep.repeats["metrics"][policy],
            "instances": len(rep.config["cluster"]["replica_gpus"]),
            "gpus": rep.config["cluster"]["replica_gpus"],
            "wall_s": time.perf_counter() - t,
        }
    return out


def table(res: dict[str, Any]) -> list[str]:
    from llmplan.report.mdtable import md_table
    from llmplan.report.repeats import HEADLINES, fmt_interval, t_interval, verdict

    heads = {h.key: h for h in HEADLINES}
    labels = list(res)
    body = []
    for key in METRICS:
        h = heads[key]
        body.append([h.label, *(fmt_interval(res[lb]["metrics"][key], h.unit) for lb in labels)])
    lines = [md_table(["metric", *labels], body), ""]
    # Paired differences against "none" (same seeds, same workloads).
    body = []
    for key in METRICS:
        h = heads[key]
        row = [h.label]
        a = res["none"]["metrics"][key]["values"]
        for lb in labels[1:]:
            b = res[lb]["metrics"][key]["values"]
            d = t_interval([y - x for x, y in zip(a, b, strict=False)])
            row.append(f"{_signed(d, h.unit)} {verdict(d, h.higher_is_better)}")
        body.append(row)
    lines += ["Paired difference vs none (mean ± 95% CI, verdict):", "",
              md_table(["metric", *labels[1:]], body), ""]  # fmt: skip
    return lines


def _signed(d: dict[str, Any], unit: str) -> str:
    """A paired difference as ``+x [lo, hi]`` (percentages in points)."""
    from llmplan.report.repeats import fmt_value

    def one(v: float) -> str:
        txt = fmt_value(abs(v), unit).replace("%", " pt")
        return ("+" if v >= 0 else "−") + txt

    if d["mean"] is None:
        return "–"
    if d["half"] is None:
        return one(d["mean"])
    return f"{one(d['mean'])} [{one(d['lo'])}, {one(d['hi'])}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="static,continuous", help="comma list of: static, continuous")
    ap.add_argument("--n", type=int, default=600, help="requests per run (default 600)")
    ap.add_argument("--rate", type=float, default=None,
                    help="ShareGPT arrival rate, req/s (default: static 8, continuous 40, where FCFS on "
                    "the naive mapping meets 60-75%% of the SLOs)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="seeds per configuration (default 3, >= 2)")
    ap.add_argument("--predictor", default="oracle",
                    help="the predictor-on arm: oracle (default) or any bench --predictor spec, e.g. "
                    "learned:DIR (a LoRA model from `llmplan predict train`) or noisy-cm:FILE")  # fmt: skip
    ap.add_argument("--const", type=int, default=256, help="the predictor-off constant N (default 256)")
    ap.add_argument("--model", default="llama-2-13b")
    ap.add_argument("--topology", default="preset:hetero-a100-l40s")
    args = ap.parse_args()
    if args.repeat < 2:
        ap.error("--repeat must be >= 2 (an interval needs two seeds)")
    with tempfile.TemporaryDirectory() as d:
        naive_path = str(Path(d) / "naive.json")
        naive = naive_plan(args.model, args.topology)
        naive.save(naive_path)
        helr = helr_plan(args.model, args.topology)
        for setting in (s.strip() for s in args.setting.split(",")):
            if setting not in SETTINGS:
                ap.error(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
            base_policy, uellm_policy, slo = SETTINGS[setting]
            res = run_setting(setting, args, naive_path)
            wall = sum(r["wall_s"] for r in res.values())
            rate = args.rate or DEFAULT_RATE[setting]
            print(f"### {setting}: {base_policy} vs {uellm_policy}, --slo {slo}, sharegpt:rate={rate:g} "
                  f"-n {args.n}, {args.model} on {args.topology}, {args.repeat} seeds "
                  f"({wall:.0f} s)\n")  # fmt: skip
            print(f"naive mapping: {layout(naive)}; HELR fill: {layout(helr)}\n")
            print("\n".join(table(res)))


if __name__ == "__main__":
    main()
