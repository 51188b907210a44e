"""How HELR planning scales: wall time for 8/64/256/512-GPU presets, and the gap to CP-SAT.

The last table times the whole joint TP x PP planner (`make_plan`, three modes) for
``--joint-model`` (DeepSeek-V3 fp8 by default; target: < 10 s per plan on dgx-h100-x64).

    python benchmarks/plan_scale.py [--model llama-2-70b] [--cpsat-limit 20]

For each preset it times (a) loading the topology, (b) pricing the problem, (c) the exact
frontier and the three mode picks -- the planner's own time is (b) + (c). CP-SAT gets the same
problem (LR objective) with a time limit; where it finishes (optimal or not) the table shows its
best solution and proven bound against the exact optimum. CP-SAT is skipped above 64 GPUs
(its model has G^2 booleans).
"""

from __future__ import annotations

import argparse
import time

from llmplan.errors import InfeasibleError
from llmplan.models import get_model_spec
from llmplan.plan.helr import choose, frontier
from llmplan.plan.problem import problem_from_graph
from llmplan.plan.types import PlanWorkload
from llmplan.topology import load_topology

PRESETS = [("dgx-h100", 8), ("dgx-h100-x8", 64), ("dgx-h100-x32", 256), ("dgx-h100-x64", 512)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama-2-70b")
    ap.add_argument("--cpsat-limit", type=float, default=20.0, help="CP-SAT time limit per instance, s")
    ap.add_argument("--cpsat-max-gpus", type=int, default=64)
    ap.add_argument("--joint-model", default="deepseek-v3", help="model for the joint TP x PP timing")
    args = ap.parse_args()
    spec = get_model_spec(args.model)
    wl = PlanWorkload(max_batch=64, input_len=1024, output_len=256)
    print(f"model {spec.name} ({spec.num_hidden_layers} layers), workload {wl}")
    hdr = (
        f"{'preset':<14}{'GPUs':>6}{'topo s':>9}{'price s':>9}{'solve s':>9}{'plan s':>9}"
        f"{'HE':>5}{'HELR':>6}{'LR':>5}{'LR latency s':>14}{'CP-SAT best s':>15}{'bound s':>10}{'gap %':>8}"
    )
    print(hdr)
    for preset, n in PRESETS:
        t0 = time.perf_counter()
        G = load_topology(f"preset:{preset}")
        t1 = time.perf_counter()
        pr = problem_from_graph(spec, G, wl)
        t2 = time.perf_counter()
        front = frontier(pr)
        picks = {m: choose(front, m) for m in ("HE", "HELR", "LR")}
        t3 = time.perf_counter()
        lr = picks["LR"]
        cps = ""
        if n <= args.cpsat_max_gpus:
            from llmplan.plan.cpsat import solve_cpsat

            res = solve_cpsat(pr, time_limit_s=args.cpsat_limit)
            if res.placement is not None:
                gap = 100 * (lr.latency - res.bound_s) / lr.latency
                status = "" if res.optimal else "*"
                cps = f"{res.placement.latency:>14.4f}{status}{res.bound_s:>10.4f}{gap:>8.2f}"
            else:
                cps = f"{'none in ' + str(args.cpsat_limit) + ' s':>15}"
        else:
            cps = f"{'(skipped)':>15}"
        print(
            f"{preset:<14}{n:>6}{t1 - t0:>9.3f}{t2 - t1:>9.3f}{t3 - t2:>9.3f}{t3 - t1:>9.3f}"
            f"{picks['HE'].gpus:>5}{picks['HELR'].gpus:>6}{lr.gpus:>5}{lr.latency:>14.4f}{cps}"
        )
    print(
        "plan s = price + solve (the planner's own time); * = CP-SAT hit its time limit; "
        "gap = (exact - CP-SAT bound) / exact"
    )
    joint(args.joint_model)


def joint(model: str) -> None:
    """The full `llmplan plan` path (TP in {1,2,4,8} x pipeline, all three modes) per preset."""
    from llmplan.plan.planner import make_plan

    spec = get_model_spec(model)
    wl = PlanWorkload(max_batch=32, input_len=512, output_len=256)
    print(f"\njoint TP x PP planning, {spec.name} ({spec.weight_precision} weights), workload {wl}")
    print(f"{'preset':<14}{'GPUs':>6}{'HE':>12}{'HELR':>12}{'LR':>12}{'plan s (3 modes)':>18}")
    for preset, n in PRESETS:
        G = load_topology(f"preset:{preset}")
        t0 = time.perf_counter()
        try:
            picks = {m: make_plan(spec, G, m, workload=wl).metrics for m in ("HE", "HELR", "LR")}
        except InfeasibleError:
            print(f"{preset:<14}{n:>6}{'does not fit':>36}{time.perf_counter() - t0:>18.2f}")
            continue
        dt = time.perf_counter() - t0
        shapes = ["{}x{}={}".format(m_["tp"], m_["pp"], m_["gpus"]) for m_ in picks.values()]
        cells = "".join(f"{c:>12}" for c in shapes)
        print(f"{preset:<14}{n:>6}{cells}{dt:>18.2f}")
    print("cells: TP x PP = GPUs of each mode's plan")


if __name__ == "__main__":
    main()
