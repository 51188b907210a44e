"""``llmplan plan --pd --objective energy``: the fewest joules per request that still meet the SLO
target, over the P:D planner's candidate splits and layouts and over clock policies.

The analytic P:D model (:mod:`llmplan.plan.pd`) has no per-iteration shapes, so energy is found by
simulation: each candidate the planner kept (the capacity answer, the best and the runners-up) is
replayed on a Poisson workload at the rate (lengths drawn from the workload's samples) with each
clock policy -- ``max`` (every step at f_max), ``fixed:<MHz>`` (locked clocks) and ``greenserve``
(EcoFreq + EcoRoute) -- and the cheapest (option, clock) whose simulated attainment meets the
target wins. Joules are modelled (``llmplan.energy.power``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmplan.energy.green import EnergyControl
from llmplan.energy.power import clock_power_for
from llmplan.errors import LlmplanError


def _key(o: Any) -> tuple:
    return (o.prefill.label(), o.decode.label(), o.n_prefill, o.n_decode)


def energy_objective(
    result: Any, spec: Any, stats: Any, req: Any, *, num_requests: int = 600, seed: int = 0,
    block_size: int = 16,
) -> dict[str, Any]:
    from llmplan.runtime.sim import SimConfig, simulate
    from llmplan.runtime.sim.config import InstanceSpec
    from llmplan.workload.types import SLO, RequestSpec, Workload

    options, seen = [], set()
    for o in [result.capacity, result.best, *result.runners_up]:
        if o is not None and _key(o) not in seen:
            seen.add(_key(o))
            options.append(o)
    rate = stats.rate if stats.rate else result.best.goodput
    rate_src = "the workload's rate" if stats.rate else "the best split's predicted goodput (no rate given)"
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.exponential(1.0 / rate, num_requests))
    idx = rng.integers(0, len(stats.inputs), num_requests)
    slo = SLO(ttft_s=req.slo_ttft_s, tpot_s=req.slo_tpot_s)
    wl = Workload("pd-energy", [
        RequestSpec(k, float(t[k]), max(1, int(stats.inputs[idx[k]])), max(1, int(stats.outputs[idx[k]])),
                    slo=slo)
        for k in range(num_requests)
    ])
    rows = []
    for o in options:
        pw = clock_power_for(o.decode.gpu_model)
        fixed = sorted({round(pw.f_max_mhz * s / pw.step_mhz) * pw.step_mhz for s in (0.7, 0.85)})
        insts = [
            InstanceSpec(f"p{k}", o.prefill.cost, o.prefill.cost.kv_capacity_blocks(block_size), "prefill")
            for k in range(o.n_prefill)
        ] + [
            InstanceSpec(f"d{k}", o.decode.cost, o.decode.cost.kv_capacity_blocks(block_size), "decode")
            for k in range(o.n_decode)
        ]
        modes: list[tuple[str, EnergyControl]] = [("max", EnergyControl(mode="max"))]
        modes += [(f"fixed:{f:.0f}", EnergyControl(mode="fixed", fixed_mhz=f)) for f in fixed]
        modes.append(("greenserve", EnergyControl(mode="greenserve", seed=seed)))
        for label, ctl in modes:
            run = simulate(wl, SimConfig(instances=insts, model=spec.name, block_size=block_size,
                                         kv_bytes_per_token=float(spec.kv_bytes_per_token), router="jsq",
                                         energy=ctl, seed=seed, record_token_times=False))
            ok = sum(
                1 for r in run.records
                if r.status == "ok" and r.ttft_s is not None and r.ttft_s <= req.slo_ttft_s
                and (r.tpot_s is None or r.tpot_s <= req.slo_tpot_s)
            )
            e = run.meta["energy"]
            rows.append({
                "prefill": o.prefill.label(), "decode": o.decode.label(),
                "ratio": f"{o.n_prefill}:{o.n_decode}", "gpus": o.gpus, "clock": label,
                "attainment": ok / len(run.records), "energy_per_request_j": e["energy_per_request_j"],
                "avg_power_w": e["avg_power_w"], "mean_clock_mhz": e["mean_clock_mhz"],
            })
    meets = [r for r in rows if r["attainment"] >= req.attainment and r["energy_per_request_j"]]
    choice = min(meets, key=lambda r: r["energy_per_request_j"]) if meets else None
    base = [r for r in meets if r["clock"] == "max"]
    return {
        "rate": rate,
        "rate_source": rate_src,
        "requests": num_requests,
        "modelled": True,
        "rows": rows,
        "choice": choice,
        "best_max_clock": min(base, key=lambda r: r["energy_per_request_j"]) if base else None,
        "refusal": None if choice else (
            f"no candidate split meets {req.attainment:.0%} attainment at {rate:.2f} req/s in simulation "
            "at any clock; lower the rate or the target, or give more GPUs (--max-gpus)"
        ),
    }


def render_energy(console: Any, out: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=f"--objective energy: {out['requests']} simulated requests at {out['rate']:.2f} req/s "
              f"({out['rate_source']}); joules modelled", header_style="bold cyan")
    for c in ("prefill", "decode", "P:D", "GPUs", "clock", "attainment", "J/request", "avg W"):
        t.add_column(c, justify="right" if c not in ("prefill", "decode", "clock") else "left")
    ch = out["choice"]
    for r in out["rows"]:
        mark = "[bold green]" if r is ch else ""
        t.add_row(r["prefill"], r["decode"], r["ratio"], str(r["gpus"]), f"{mark}{r['clock']}",
                  f"{r['attainment']:.1%}", f"{mark}{r['energy_per_request_j'] or 0:.1f}",
                  f"{r['avg_power_w']:.0f}")
    console.print(t)
    if ch is None:
        raise LlmplanError(out["refusal"])
    line = (f"fewest joules meeting the target: {ch['ratio']} {ch['prefill']} -> {ch['decode']} at clock "
            f"{ch['clock']}: {ch['energy_per_request_j']:.1f} J/request, attainment {ch['attainment']:.1%}")
    b = out["best_max_clock"]
    if b is not None and b is not ch:
        saved = 1 - ch["energy_per_request_j"] / b["energy_per_request_j"]
        line += f" ({saved:.1%} below the best max-clock split)"
    console.print(line)
