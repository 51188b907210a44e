"""The modelled clock curves behind GreenServe (llmplan.energy.power): time and joules per
iteration against the SM clock for a compute-bound prefill and memory-bound decode steps, with the
lowest-energy clock of each, on the GPUs given. Every number is modelled.

    python benchmarks/energy_ushape.py --model llama-3.1-8b --gpus A100-SXM-80GB,H100-SXM
"""

from __future__ import annotations

import argparse

from llmplan.energy.power import ClockedCost, energy_optimal_mhz
from llmplan.plan.costmodel import BatchShape
from llmplan.runtime.sim.cluster import default_cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--gpus", default="A100-SXM-80GB,H100-SXM")
    ap.add_argument("--tp", type=int, default=1)
    a = ap.parse_args()
    shapes = {
        "prefill 2048": BatchShape(prefill_tokens=2048, prefill_attn=2048 * 2049 / 2),
        "decode b=32": BatchShape(decode_seqs=32, decode_ctx=32 * 1000),
        "decode b=256": BatchShape(decode_seqs=256, decode_ctx=256 * 1000),
        "decode b=257": BatchShape(decode_seqs=257, decode_ctx=257 * 1000),
    }
    for gpu in a.gpus.split(","):
        c = ClockedCost.wrap(default_cost(a.model, gpu, a.tp))
        pw = c.power
        clocks = pw.ladder(7)
        print(f"\n{a.model} TP{a.tp} on {gpu}: ms / J per iteration at SM clock (MHz); "
              f"idle {pw.idle_w:.0f} W, static {pw.static_w:.0f} W, dyn {pw.dyn_w:.0f} W, alpha {pw.alpha}")
        print(f"{'shape':14}" + "".join(f"{f:>15.0f}" for f in clocks) + "   lowest-J clock")
        for name, s in shapes.items():
            ev = [c.evaluate(s, f) for f in clocks]
            cells = "".join(f"{e.time_s * 1e3:7.1f}/{e.energy_j:7.2f}" for e in ev)
            fopt, _ = energy_optimal_mhz(c, [s])
            print(f"{name:14}{cells}   {fopt:.0f}")


if __name__ == "__main__":
    main()
