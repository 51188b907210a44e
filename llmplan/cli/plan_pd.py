"""``llmplan plan --pd``: plan, optionally validate in the simulator or choose by energy, then
save and print (the plan line, capacity, runner-ups and instances)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import networkx as nx
    from rich.console import Console

    from llmplan.models.spec import ModelSpec
    from llmplan.plan.costmodel import CostParams
    from llmplan.plan.pd import PDResult


@dataclass(frozen=True, slots=True)
class PDOptions:
    """The ``--pd`` options of ``llmplan plan`` (already range-checked by the command)."""

    trace: Path | None
    input_len: int
    output_len: int
    rate: float | None
    slo_ttft: float
    slo_tpot: float
    attainment: float
    max_gpus: int | None
    validate: bool
    objective: str


def run_pd(
    spec: ModelSpec,
    graph: nx.Graph,
    params: CostParams,
    o: PDOptions,
    *,
    gpus: list[str] | None,
    topology: str,
    out: Path | None,
    as_json: bool,
) -> None:
    from llmplan.cli._common import console, print_json
    from llmplan.deployment import save_plan
    from llmplan.errors import LlmplanError
    from llmplan.plan.pd import PDRequest, load_length_stats, plan_pd

    stats = load_length_stats(o.trace, o.input_len, o.output_len, o.rate)
    req = PDRequest(
        slo_ttft_s=o.slo_ttft, slo_tpot_s=o.slo_tpot, attainment=o.attainment, max_gpus=o.max_gpus
    )
    result = plan_pd(spec, graph, stats, req, params=params, gpus=gpus, topology=topology)
    if o.validate:
        from llmplan.bench.pd_validate import validate_in_simulator

        result = validate_in_simulator(result, spec, graph, stats, req)
    energy = None
    if o.objective == "energy":
        from llmplan.energy.plan import energy_objective

        energy = energy_objective(result, spec, stats, req)
    if out:
        save_plan(result.plan, out)
    if as_json:
        print_json({**result.to_dict(), **({"energy": energy} if energy else {})})
        if energy and energy["choice"] is None:
            raise LlmplanError(energy["refusal"])
        return
    render_pd(console, result)
    if energy is not None:
        from llmplan.energy.plan import render_energy

        render_energy(console, energy)
    if out:
        console.print(f"saved plan to {out}")


def render_pd(console: Console, result: PDResult) -> None:
    from rich.table import Table

    b = result.best
    console.print(
        f"[bold]P:D plan[/] for {result.plan.model}: {b.n_prefill} prefill x {b.prefill.label()} + "
        f"{b.n_decode} decode x {b.decode.label()} = {b.gpus} GPUs, ratio {b.ratio}"
        + (f" (x{b.replicas} to serve --rate)" if b.replicas > 1 else ""),
        highlight=False,
    )
    console.print(
        f"  goodput {b.goodput:.2f} req/s ({b.per_gpu:.3f} req/s per GPU) at attainment "
        f"{b.attainment:.3f} (TTFT {b.ttft_att:.3f}, TPOT {b.tpot_att:.3f}); SLOs TTFT "
        f"{result.request.slo_ttft_s:g} s, TPOT {result.request.slo_tpot_s:g} s, target "
        f"{result.request.attainment:g}; KV transfer over {b.kv_link}",
        highlight=False,
    )
    if result.at_rate:
        r = result.at_rate
        console.print(
            f"  at {r['rate']:.2f} req/s: predicted attainment {r['attainment']:.3f}", highlight=False
        )
    rate = result.stats.rate
    if rate:
        c = result.capacity
        if c is None:
            console.print(
                f"[bold]capacity[/] at {rate:.2f} req/s: no prefill:decode split within the GPU budget "
                f"holds attainment {result.request.attainment:g}; add GPUs or relax the SLOs",
                highlight=False,
            )
        else:
            console.print(
                f"[bold]capacity[/]: the fewest GPUs holding attainment {result.request.attainment:g} at "
                f"{rate:.2f} req/s (the workload's rate): [bold]{c.gpus} GPU(s)[/] = {c.n_prefill} prefill "
                f"x {c.prefill.label()} + {c.n_decode} decode x {c.decode.label()}",
                highlight=False,
            )
            console.print(
                f"  split {c.n_prefill}:{c.n_decode}, predicted attainment {result.capacity_attainment:.3f} "
                f"at that rate; it tops out at {c.goodput:.2f} req/s ({c.per_gpu:.3f} per GPU)",
                highlight=False,
            )
            if b.gpus > c.gpus:
                console.print(
                    f"  (the plan above maximises goodput per GPU: {b.gpus} GPUs for {b.goodput:.2f} req/s, "
                    f"{b.goodput / rate:.1f}x this rate)",
                    highlight=False,
                )
    t = Table(title="runner-ups", title_justify="left")
    for col in ("prefill", "decode", "ratio", "GPUs", "goodput req/s", "per GPU", "attainment"):
        t.add_column(col)
    for o in result.runners_up:
        t.add_row(
            o.prefill.label(),
            o.decode.label(),
            f"{o.n_prefill}:{o.n_decode}",
            str(o.gpus),
            f"{o.goodput:.2f}",
            f"{o.per_gpu:.3f}",
            f"{o.attainment:.3f}",
        )
    console.print(t)
    it = Table(title="instances", title_justify="left")
    for col in (
        "#",
        "role",
        "GPUs",
        "stages x TP",
        "weights GiB/GPU",
        "KV GiB/GPU",
        "prefill ms",
        "decode ms (b=1)",
    ):
        it.add_column(col)
    for i, inst in enumerate(result.plan.instances):
        st = inst.stages
        it.add_row(
            str(i),
            inst.role,
            ",".join(inst.gpus),
            f"{len(st)} x {len(st[0].gpus)}",
            f"{max(s.weights_gib for s in st):.2f}",
            f"{min(s.kv_gib for s in st):.2f}",
            f"{sum(s.prefill_s for s in st) * 1e3:.2f}",
            f"{sum(s.decode_s for s in st) * 1e3:.3f}",
        )
    console.print(it)
    if result.validation:
        v = result.validation
        console.print(
            f"  validate: at {v['rate']:.2f} req/s ({v['requests']} requests) predicted attainment "
            f"{v['predicted_attainment']:.3f}, simulated {v['simulated_attainment']:.3f} (TTFT "
            f"{v['predicted_ttft_attainment']:.3f} vs {v['simulated_ttft_attainment']:.3f}, TPOT "
            f"{v['predicted_tpot_attainment']:.3f} vs {v['simulated_tpot_attainment']:.3f})",
            highlight=False,
        )
    for n in result.notes:
        console.print(f"  note: {n}", highlight=False)
