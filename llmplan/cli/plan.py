"""`llmplan plan`: Place contiguous layers on GPUs (HE/LR/HELR) and plan prefill:decode ratios."""

from __future__ import annotations

from pathlib import Path

import typer

from llmplan.cli._flags import (
    POWER_CAP_HELP,
    POWER_CAP_METAVAR,
    SERVING_ENGINE_HELP,
    TOPOLOGY_HELP,
    parse_power_caps,
)

HELP = """Place a model's layers on GPUs as pipeline stages of tensor-parallel groups (TP 1/2/4/8 within
a host, EP for MoE where needed), exactly optimal for the chosen objective.

[bold]Modes[/]: HE = fewest GPUs, then lowest latency; LR = lowest latency; HELR (default) = the
balance a1 * latency + a2 * GPUs, both min-max normalised between the HE and LR plans.

Latency is that of the reference batch (--max-batch requests of --input-len + --output-len tokens):
prompts stream through the pipeline, then the batch decodes; the KV reserve for that batch limits
the layers per GPU. Precision: --weight-dtype bf16|fp16|fp8|int8|int4, --kv-dtype auto|fp8.
Models: dense, MoE (Mixtral, Qwen-MoE, DeepSeek) and MLA configs; others are refused. See docs/plan.md.

[bold]--fill[/] plans one instance after another on the GPUs left until the model no longer fits
(greedy across instances, exact within each) and saves them as one multi-instance plan.

[bold]--pd[/] instead chooses prefill and decode instances (count, TP/PP, GPUs) that maximise
goodput per GPU under --slo-ttft/--slo-tpot for a workload (--trace CSV or --rate/--input-len/--output-len).

Examples:
  llmplan plan --model chatglm2-6b --topology preset:4x-rtx3090 --mode HE
  llmplan plan --model llama-2-70b --topology preset:dgx-h100 --out plan.json
  llmplan plan --model llama-3.1-70b --topology preset:dgx-h100 --mode LR --weight-dtype fp8
  llmplan plan --model deepseek-v3 --topology preset:dgx-h200
  llmplan plan --model llama-2-13b --topology preset:dgx-a100 --fill --out fill.json
  llmplan plan --model llama-3.1-8b --topology preset:dgx-h100 --pd --rate 20 --slo-ttft 1 --slo-tpot 0.05
"""


def register(app: typer.Typer) -> None:
    @app.command("plan", help=HELP)
    def plan_cmd(
        model: str | None = typer.Option(
            None, "--model", "-m", help="Catalog name (e.g. llama-2-7b) or path to a HF config.json."
        ),
        topology: str = typer.Option("auto", "--topology", help=TOPOLOGY_HELP),
        topology_short: str | None = typer.Option(
            None, "-t", hidden=True, help="Deprecated: --topology (-t is --trace in bench)."
        ),
        mode: str = typer.Option("HELR", "--mode", help="HE | LR | HELR."),
        a1: float = typer.Option(0.5, "--a1", help="HELR weight of latency."),
        a2: float = typer.Option(0.5, "--a2", help="HELR weight of the GPU count."),
        max_batch: int = typer.Option(32, "--max-batch", min=1, help="Reference batch: concurrent requests."),
        input_len: int = typer.Option(512, "--input-len", min=1, help="Reference prompt tokens."),
        output_len: int = typer.Option(256, "--output-len", min=1, help="Reference generated tokens."),
        weight_dtype: str | None = typer.Option(
            None,
            "--weight-dtype",
            help="Weight precision: bf16 | fp16 | fp8 | int8 | int4 (AWQ/GPTQ, group 128). Default: the "
            "checkpoint's (its quantization_config, else its torch_dtype).",
        ),
        kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache precision: auto | fp8."),
        max_model_len: int | None = typer.Option(
            None,
            "--max-model-len",
            min=1,
            help="Context limit to serve (<= the model's; default input+output).",
        ),
        tp: str = typer.Option(
            "1,2,4,8", "--tp", help="TP degrees each pipeline stage may use (one host, interchangeable GPUs)."
        ),
        gpus: str | None = typer.Option(None, "--gpus", help="Restrict to these GPU indices, e.g. 0,1,3."),
        power_cap: list[str] = typer.Option(
            [], "--power-cap", metavar=POWER_CAP_METAVAR, help=POWER_CAP_HELP
        ),
        compute_eff: float | None = typer.Option(
            None, "--compute-eff", help="Roofline: fraction of peak FLOP/s."
        ),
        memory_eff: float | None = typer.Option(
            None, "--memory-eff", help="Roofline: fraction of peak HBM GB/s."
        ),
        serving_engine: str = typer.Option(
            "vllm",
            "--serving-engine",
            help=SERVING_ENGINE_HELP + " Default vllm: the engine of the `vllm serve` line the plan prints.",
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Save the plan (.json or .yaml)."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the plan (and device_map, vllm line) as JSON."
        ),
        show_device_map: bool = typer.Option(False, "--device-map", help="Print the full HF device_map."),
        pd: bool = typer.Option(False, "--pd", help="Plan prefill:decode disaggregation instead."),
        trace: Path | None = typer.Option(
            None, "--trace", help="--pd: CSV with TIMESTAMP,ContextTokens,GeneratedTokens."
        ),
        rate: float | None = typer.Option(
            None, "--rate", help="--pd: request rate (req/s) to report attainment at."
        ),
        slo_ttft: float = typer.Option(2.0, "--slo-ttft", help="--pd: TTFT SLO, seconds."),
        slo_tpot: float = typer.Option(0.1, "--slo-tpot", help="--pd: TPOT SLO, seconds."),
        attainment: float = typer.Option(
            0.9, "--attainment", help="--pd: fraction of requests meeting both SLOs."
        ),
        objective: str = typer.Option(
            "goodput", "--objective",
            help="--pd: goodput (most req/s per GPU, analytic) or energy (fewest modelled joules per "
            "request meeting the target, by simulating the candidate splits at max, locked and GreenServe "
            "clocks; docs/energy.md).",
        ),
        validate: bool = typer.Option(
            False, "--validate", help="--pd: replay in the simulator, compare attainment."
        ),
        max_gpus: int | None = typer.Option(
            None, "--max-gpus", min=1, help="--pd: GPU budget (default: all)."
        ),
        plan_file: Path | None = typer.Option(
            None, "--plan", help="Show a saved plan (table, vllm line, device_map) instead of planning."
        ),
        fill: bool = typer.Option(
            False,
            "--fill",
            help="Fill the topology: plan an instance with --mode on the GPUs left, repeat while the "
            "model fits (greedy across instances, exact within each).",
        ),
        max_instances: int | None = typer.Option(
            None, "--max-instances", min=1, help="--fill: stop after this many instances."
        ),
        kv_profile: Path | None = typer.Option(
            None,
            "--kv-profile",
            help="Size the per-request KV reserve from a resource profile (`llmplan profile fit --out "
            "DIR`) collected serving this model: the --kv-quantile of predicted peak memory above the "
            "idle floor, over --kv-prompts; replaces --input-len + --output-len in the reserve.",
        ),
        kv_prompts: Path | None = typer.Option(
            None, "--kv-prompts", help="--kv-profile: JSONL of {prompt, task?} (default: the task suite)."
        ),
        kv_quantile: float = typer.Option(0.9, "--kv-quantile", help="--kv-profile: per-request quantile."),
    ) -> None:
        from llmplan.cli._common import console
        from llmplan.deployment import save_plan
        from llmplan.errors import LlmplanError
        from llmplan.models import get_model_spec
        from llmplan.plan.planner import make_plan
        from llmplan.plan.types import PlanWorkload
        from llmplan.topology import load_topology

        if topology_short is not None:  # one letter, two meanings: bench's -t is --trace
            from llmplan.cli._flags import deprecated

            deprecated(f"-t {topology_short}", f"--topology {topology_short}")
            topology = topology_short
        if plan_file is not None:
            from llmplan.plan.types import Plan

            _show(Plan.load(plan_file), as_json, show_device_map)
            return
        if not model:
            raise LlmplanError(
                "pass --model NAME (catalog name or config.json path), or --plan FILE to show a plan"
            )
        _check_numbers(
            a1=a1, a2=a2, max_batch=max_batch, input_len=input_len, output_len=output_len, rate=rate,
            slo_ttft=slo_ttft, slo_tpot=slo_tpot, attainment=attainment, kv_quantile=kv_quantile,
            compute_eff=compute_eff, memory_eff=memory_eff,
        )  # fmt: skip
        params = _cost_params(serving_engine, compute_eff, memory_eff)  # refuses an unknown engine first
        spec = get_model_spec(model).with_precision(weight_dtype, kv_dtype)
        graph = load_topology(topology, parse_power_caps(power_cap) or None)
        subset = _gpu_subset(gpus, graph)
        tp_degrees = _tp_degrees(tp)
        _check_modes(fill=fill, pd=pd, max_instances=max_instances, objective=objective)
        if pd:
            from llmplan.cli.plan_pd import PDOptions, run_pd

            run_pd(
                spec, graph, params,
                PDOptions(trace=trace, input_len=input_len, output_len=output_len, rate=rate,
                          slo_ttft=slo_ttft, slo_tpot=slo_tpot, attainment=attainment, max_gpus=max_gpus,
                          validate=validate, objective=objective),
                gpus=subset, topology=topology, out=out, as_json=as_json,
            )  # fmt: skip
            return

        wl = PlanWorkload(
            max_batch=max_batch, input_len=input_len, output_len=output_len, max_model_len=max_model_len
        )
        if kv_profile is not None:
            wl = _profile_reserve(wl, spec, kv_profile, kv_prompts, kv_quantile, quiet=as_json)
        elif kv_prompts is not None:
            raise LlmplanError("--kv-prompts only applies with --kv-profile DIR")
        if fill:
            from llmplan.plan.planner import fill_plan

            plan = fill_plan(
                spec, graph, mode, a1=a1, a2=a2, workload=wl, params=params, gpus=subset,
                topology=topology, max_instances=max_instances, tp_degrees=tp_degrees,
            )  # fmt: skip
        else:
            plan = make_plan(
                spec, graph, mode, a1=a1, a2=a2, workload=wl, params=params, gpus=subset, topology=topology,
                tp_degrees=tp_degrees,
            )  # fmt: skip
        if out:
            save_plan(plan, out)
        _show(plan, as_json, show_device_map)
        if out and not as_json:
            console.print(f"saved plan to {out}")


def _cost_params(serving_engine: str, compute_eff: float | None, memory_eff: float | None):
    """The cost model's parameters for ``--serving-engine``, with the roofline efficiencies given."""
    import dataclasses

    from llmplan.errors import LlmplanError
    from llmplan.plan.costmodel import CostParams, params_for_engine

    params = params_for_engine(serving_engine, CostParams())
    if compute_eff is not None:
        params = dataclasses.replace(params, compute_eff=compute_eff)
    if memory_eff is not None:
        params = dataclasses.replace(params, memory_eff=memory_eff)
    if not (0 < params.compute_eff <= 1 and 0 < params.memory_eff <= 1):
        raise LlmplanError("--compute-eff and --memory-eff must be in (0, 1]")
    return params


def _gpu_subset(gpus: str | None, graph) -> list[str] | None:
    """``--gpus 0,1,3`` as GPU node ids of ``graph`` (None: every GPU)."""
    from llmplan.errors import LlmplanError

    if not gpus:
        return None
    try:
        subset = [f"GPU{int(x)}" for x in gpus.split(",")]
    except ValueError:
        raise LlmplanError(f"--gpus {gpus!r} is not a list of indices; e.g. --gpus 0,1,3") from None
    if len(set(subset)) != len(subset):
        raise LlmplanError(f"--gpus {gpus!r} names a GPU twice; list each index once (--gpus 0,1)")
    missing = [g for g in subset if g not in graph.nodes]
    if missing:
        raise LlmplanError(f"--gpus names {', '.join(missing)}, not in the topology; see `llmplan topology`")
    return subset


def _tp_degrees(tp: str) -> tuple[int, ...]:
    from llmplan.errors import LlmplanError

    try:
        return tuple(int(x) for x in tp.split(","))
    except ValueError:
        raise LlmplanError(f"--tp {tp!r} is not a list of TP degrees; e.g. --tp 1,2,4,8") from None


def _check_modes(*, fill: bool, pd: bool, max_instances: int | None, objective: str) -> None:
    """The option combinations that contradict each other, refused before any planning."""
    from llmplan.errors import LlmplanError

    if fill and pd:
        raise LlmplanError("--fill and --pd are exclusive; --pd already chooses its instances")
    if max_instances is not None and not fill:
        raise LlmplanError("--max-instances only applies with --fill")
    if objective not in ("goodput", "energy"):
        raise LlmplanError(f"--objective {objective!r}: choose goodput or energy")
    if objective == "energy" and not pd:
        raise LlmplanError("--objective energy plans P:D splits and clocks; add --pd")


def _check_numbers(
    *, a1, a2, max_batch, input_len, output_len, rate, slo_ttft, slo_tpot, attainment, kv_quantile,
    compute_eff, memory_eff,
) -> None:  # fmt: skip
    """Every numeric option finite and in range before any planning (``--a1 nan`` would score
    every plan ``nan``; a 10^22-token prompt overflows the cost model's integers)."""
    from llmplan.errors import LlmplanError
    from llmplan.validate import integer, number, positive

    number(a1, "--a1", lo=0)
    number(a2, "--a2", lo=0)
    if a1 == 0 and a2 == 0:
        raise LlmplanError("--a1 and --a2 are both 0: no objective is left; give one of them a weight > 0")
    integer(max_batch, "--max-batch", lo=1, hi=1 << 20)
    integer(input_len, "--input-len", lo=1, hi=1 << 30)
    integer(output_len, "--output-len", lo=1, hi=1 << 30)
    if rate is not None:
        positive(rate, "--rate", fix="requests per second, e.g. --rate 20")
    positive(slo_ttft, "--slo-ttft", fix="seconds, e.g. --slo-ttft 1")
    positive(slo_tpot, "--slo-tpot", fix="seconds, e.g. --slo-tpot 0.05")
    number(attainment, "--attainment", lo=0, hi=1, lo_open=True, hi_open=True, fix="e.g. 0.9")
    number(kv_quantile, "--kv-quantile", lo=0, hi=1, lo_open=True, fix="e.g. 0.9")
    for flag, v in (("--compute-eff", compute_eff), ("--memory-eff", memory_eff)):
        if v is not None:
            number(v, flag, lo=0, hi=1, lo_open=True, fix="a fraction of peak, e.g. 0.6")


def _profile_reserve(wl, spec, profile_dir: Path, prompts_file: Path | None, quantile: float, quiet: bool):
    import dataclasses

    from llmplan.cli._common import console
    from llmplan.profile.collect import load_suite
    from llmplan.profile.kv_reserve import kv_reserve_from_profile

    rows = load_suite(prompts_file)
    res = kv_reserve_from_profile(
        profile_dir, [r["prompt"] for r in rows], tasks=[r.get("task") for r in rows], quantile=quantile
    )
    per_req = res.tokens_per_request(spec.kv_bytes_per_token)
    if not quiet:
        console.print(
            f"KV reserve from {profile_dir}: P{quantile * 100:g} of predicted peak memory above the "
            f"{res.floor_mb:.0f} MiB floor over {res.prompts} prompts = {res.per_request_mb:.1f} MiB "
            f"per request = {per_req} KV tokens of {spec.name} (x --max-batch {wl.max_batch})"
        )
    return dataclasses.replace(wl, kv_tokens_per_request=per_req)


def _show(plan, as_json: bool, show_device_map: bool) -> None:
    from llmplan.cli._common import console, print_json
    from llmplan.plan.outputs import device_map, plan_table, summary, vllm_command

    if plan.mode == "PD":
        if as_json:
            print_json(plan.to_dict())
            return
        for i, inst in enumerate(plan.instances):
            console.print(plan_table(plan, i, title=f"instance {i}: {inst.role}"))
        console.print(
            f"P:D {plan.metrics.get('ratio')}: goodput {plan.metrics.get('goodput_rps', 0):.2f} req/s",
            highlight=False,
        )
        return
    if plan.metrics.get("fill"):
        _show_fill(plan, as_json)
        return
    from llmplan.plan.outputs import hosts

    wl = plan.workload
    multi = len(hosts(plan)) > 1
    dm = {} if multi else device_map(plan)
    cmd, note = vllm_command(plan)
    if as_json:
        d = plan.to_dict()
        d["device_map"] = dm
        d["vllm_command"] = cmd
        d["vllm_note"] = note
        print_json(d)
        return
    console.print(plan_table(plan))
    s = summary(plan)
    console.print(
        f"[bold]{s['gpus']} GPU(s)[/]  TTFT {s['ttft_ms']} ms (one prompt)  TPOT {s['tpot_ms']} ms "
        f"(batch {wl.max_batch})  batch latency {s['batch_latency_s']} s "
        f"({wl.max_batch} x {wl.input_len}+{wl.output_len} tokens)"
        + (
            f"  KV reserve {wl.kv_tokens_per_request} tokens/request (profile)"
            if wl.kv_tokens_per_request is not None
            else ""
        ),
        highlight=False,
    )
    for line in plan.explanation:
        console.print(f"  - {line}", highlight=False)
    _engine_line(plan)
    if cmd:
        console.print(f"[bold]vllm:[/] {cmd}", highlight=False, soft_wrap=True)
        console.print(f"  ({note})", highlight=False)
    else:
        console.print(f"[bold]vllm:[/] no command: {note}", highlight=False)
    if multi:
        console.print(
            f"[bold]device_map:[/] none: the plan spans hosts {', '.join(hosts(plan))} "
            "(an HF device_map is single-process)",
            highlight=False,
        )
    elif show_device_map:
        print_json(dm)
    else:
        spans = [f"{st.layer_start}-{st.layer_end - 1}->cuda:{st.device}" for st in plan.stages]
        console.print(
            f"[bold]device_map:[/] layers {', '.join(spans)} ({len(dm)} modules; --device-map prints it)",
            highlight=False,
        )


def _engine_line(plan) -> None:
    """Say which engine priced the plan when it is not vLLM, the engine of the command printed."""
    from llmplan.cli._common import console
    from llmplan.opcost.engines import engine_overhead

    eng = (plan.params or {}).get("serving_engine") or "vllm"
    if eng != "vllm":
        e = engine_overhead(eng)
        console.print(
            f"  - priced for serving engine {e.engine}: {e.per_step_s * 1e3:g} ms per step "
            f"({'measured' if e.measured else 'estimate'}: {e.source}); the vllm line runs it on vLLM "
            f"({engine_overhead('vllm').per_step_s * 1e3:g} ms per step)",
            highlight=False,
        )


def _show_fill(plan, as_json: bool) -> None:
    """A filled plan: one table (and vllm line) per instance, then the fill's reasoning."""
    from llmplan.cli._common import console, print_json
    from llmplan.plan.outputs import vllm_command

    if as_json:
        print_json(plan.to_dict())
        return
    wl = plan.workload
    per = plan.metrics.get("instances", [])
    for k, inst in enumerate(plan.instances):
        console.print(_fill_table(plan, k))
        m = per[k] if k < len(per) else {}
        console.print(
            f"[bold]instance {k}: {len(inst.gpus)} GPU(s)[/]  TTFT {m.get('ttft_s', 0) * 1e3:.2f} ms "
            f"(one prompt)  TPOT {m.get('tpot_s', 0) * 1e3:.3f} ms (batch {wl.max_batch})  batch latency "
            f"{m.get('batch_latency_s', 0):.3f} s",
            highlight=False,
        )
        cmd, note = vllm_command(plan, k)
        console.print(f"  vllm: {cmd or 'no command: ' + note}", highlight=False, soft_wrap=True)
    unused = plan.metrics.get("unused_gpus", [])
    console.print(
        f"[bold]{len(plan.instances)} instance(s) on {plan.num_gpus} GPU(s)[/]; unused: "
        f"{', '.join(unused) if unused else 'none'}",
        highlight=False,
    )
    for line in plan.explanation:
        console.print(f"  - {line}", highlight=False)
    _engine_line(plan)


def _fill_table(plan, k: int):
    from llmplan.plan.outputs import plan_table

    inst = plan.instances[k]
    return plan_table(
        plan,
        k,
        title=f"{plan.model} on {plan.topology} -- {plan.mode} fill, instance {k} ({', '.join(inst.gpus)})",
    )
