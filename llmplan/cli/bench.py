"""`llmplan bench`: replay a trace against the simulator (or a live server) and write a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmplan.cli._common import console, err_console, print_json

if TYPE_CHECKING:  # the library is imported lazily inside the command body
    from llmplan.report import BenchReport
    from llmplan.report.runner import BenchConfig, OnProgress
    from llmplan.workload import Workload

_HELP = """Replay a trace against the simulated cluster (or a live server) and write a report.

With no flags this is the main job: the Azure LLM inference trace 2023 (conversation) on
llama-2-13b over preset dgx-a100 filled with HELR instances (`llmplan plan --fill`: one
instance after another on the GPUs left, each priced as planned), simulated under continuous
FCFS (vLLM-like), UELLM's SLO-ODBS and S3, report in ./llmplan-report/.

Examples:

  llmplan bench                                   # the main job
  llmplan bench --trace azure-code --window 0:10m --rate-scale 2 --compare fcfs,sjf,s3
  llmplan bench --trace synthetic:rate=8,cv=2,n=2000 --slo fixed:ttft=1,tpot=0.1,e2e=60
  llmplan bench --trace azure --max-requests 2000 --sweep-rate 2,4,6,8,10
  llmplan bench --trace azure -n 2000 --compare vllm,distserve,banaserve --sweep-rate 1,5,10,20
  llmplan bench --target http://127.0.0.1:8000 --trace azure --max-requests 100 --rate-scale 4
  llmplan bench --trace azure -n 60 --rate-scale 0.5 --compare vllm,distserve,banaserve --live
"""


def _floats(text: str, flag: str) -> list[float]:
    from llmplan.errors import LlmplanError

    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LlmplanError(
            f"{flag} wants comma-separated numbers, e.g. {flag} 2,4,6,8; got {text!r}"
        ) from None
    if not vals or any(v <= 0 for v in vals):
        raise LlmplanError(f"{flag} wants positive numbers, e.g. {flag} 2,4,6,8; got {text!r}")
    return vals


def _disagg(text: str | None) -> tuple[int, int] | None:
    from llmplan.errors import LlmplanError

    if not text:
        return None
    a, sep, b = text.partition(":")
    if not sep or not a.isdigit() or not b.isdigit():
        raise LlmplanError(f"--disaggregation wants P:D instance counts, e.g. 2:6; got {text!r}")
    return int(a), int(b)


def register(app: typer.Typer) -> None:
    @app.command("bench", help=_HELP)
    def bench(
        trace: str = typer.Option(
            "azure",
            "--trace",
            "-t",
            help="azure (=azure-conv), azure-code, azure-conv-2024, azure-code-2024, "
            "sharegpt[:rate=R,tokenizer=llama3|mistral], synthetic[:rate=R,n=N,cv=C,arrival=poisson|gamma,"
            "lengths=lognormal|empirical,...], or file:PATH "
            "(CSV/JSONL: TIMESTAMP,ContextTokens,GeneratedTokens).",
        ),
        rate_scale: float = typer.Option(
            1.0,
            "--rate-scale",
            help="Replay arrivals this many times faster (2 = twice the trace's rate), simulated or live.",
        ),
        window: str = typer.Option(
            None, "--window", help="START:END of the trace to keep, e.g. 0:600 or 10m:20m."
        ),
        max_requests: int = typer.Option(None, "--max-requests", "-n", help="Keep the first N requests."),
        seed: int = typer.Option(
            0, "--seed", help="Seed for synthetic arrivals, SLO draws and noisy predictors."
        ),
        slo: str = typer.Option(
            "proportional",
            "--slo",
            help="Per-request SLOs: proportional[:a=0.5,b=0.001,tpot=0.1,slack=1] (TTFT=a+b*prompt, "
            "E2E=TTFT+n*TPOT*slack), fixed[:ttft=2,tpot=0.1,e2e=60], "
            "uellm[:lo=1,hi=350] (random E2E deadlines), none.",
        ),
        model: str = typer.Option(
            "llama-2-13b", "--model", "-m", help="Model from the catalog (llmplan plan --help)."
        ),
        topology: str = typer.Option("preset:dgx-a100", "--topology", help="preset:NAME or file:PATH."),
        plan: Path = typer.Option(
            None, "--plan", help="A plan saved by `llmplan plan --out`; default: plan HELR now."
        ),
        plan_mode: str = typer.Option("HELR", "--plan-mode", help="HE, LR or HELR when planning here."),
        policy: str = typer.Option(
            None,
            "--policy",
            "-p",
            help="Run one batch policy. Continuous batching: fcfs (vLLM-like), sjf, ljf, s3, slo-odbs-cb, "
            "slo-dbs-cb, odbs-cb (UELLM's Algorithm 3-1 as the admission rule). Static batching (a batch "
            "runs to its longest member; UELLM's own setting): static-fcfs, slo-odbs, slo-dbs, odbs.",
        ),
        compare: str = typer.Option(
            None,
            "--compare",
            help="Run these policies on the identical workload, side by side (default fcfs,slo-odbs-cb,s3: "
            "all continuous, so the comparison is like for like; compare static policies among themselves, "
            "e.g. static-fcfs,slo-odbs,odbs). "
            "Or whole systems (the BanaServe comparison, one TP=1 replica per A100-80GB): vllm "
            "(colocated continuous batching, round-robin), distserve (static P:D split, least-loaded), "
            "banaserve (same P:D + load-aware router + migration controller); --instances sets the "
            "GPUs (default 4), --disaggregation the P:D split (default half:half). Systems and "
            "policies do not mix.",
        ),
        sweep_rate: str = typer.Option(
            None,
            "--sweep-rate",
            help="Offered rates in req/s to sweep, e.g. 2,4,6,8: "
            "attainment-vs-rate curves and DistServe goodput.",
        ),
        sweep_target: float = typer.Option(
            0.9, "--sweep-target", help="Attainment target for DistServe goodput."
        ),
        router: str = typer.Option("round-robin", "--router", help="round-robin, least-loaded or jsq."),
        instances: int = typer.Option(
            None,
            "--instances",
            help="Replicate the plan's instance N times (default: every instance of the planner's "
            "fill of the topology, or of the --plan file, as planned).",
        ),
        predictor: str = typer.Option(
            "oracle",
            "--predictor",
            help="Length source for length-aware policies: oracle or noisy:ACC (e.g. noisy:0.8).",
        ),
        block_size: int = typer.Option(16, "--block-size", help="KV block size in tokens."),
        chunked_prefill: bool = typer.Option(
            False, "--chunked-prefill", help="Split long prompts across iterations."
        ),
        disaggregation: str = typer.Option(
            None, "--disaggregation", help="P:D prefill/decode instance split, e.g. 2:6."
        ),
        token_times: bool = typer.Option(
            True,
            "--token-times/--no-token-times",
            help="Record every token's time (needed for ITL); off saves memory on long traces.",
        ),
        jobs: int = typer.Option(
            None, "--jobs", "-j", help="Simulations to run in parallel (default: one per CPU core)."
        ),
        out: Path = typer.Option(Path("llmplan-report"), "--out", "-o", help="Report directory."),
        plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
        json_out: bool = typer.Option(
            False, "--json", help="Print report.json to stdout instead of the table."
        ),
        target: str = typer.Option(
            None, "--target", help="Live mode: an OpenAI-compatible server URL to replay the trace against."
        ),
        time_scale: float = typer.Option(
            None, "--time-scale", hidden=True, help="Deprecated: --rate-scale, same sense, live or simulated."
        ),
        simulate_too: bool = typer.Option(
            False,
            "--simulate",
            help="With --target: also simulate the same workload and show predicted vs measured.",
        ),
        calibration: Path = typer.Option(
            None,
            "--calibration",
            help="A profile from `llmplan calibrate`; the simulator "
            "prices iterations with it instead of the roofline.",
        ),
        live: bool = typer.Option(
            False,
            "--live",
            help="With --compare vllm,distserve,banaserve: run each system as a real `llmplan serve "
            "--instances 2` deployment of the built-in CPU engine on 127.0.0.1 (dummy weights, one torch "
            "thread per backend) and replay the workload against it; lengths scaled by --live-scale.",
        ),
        live_model: str = typer.Option(
            "llama-tiny", "--live-model", help="--live: dummy-weight catalog model the backends serve."
        ),
        live_scale: str = typer.Option(
            "0.5,0.5",
            "--live-scale",
            help="--live: PROMPT,OUTPUT token-length scales (then capped at 1024 and 128 tokens) so the "
            "trace fits a CPU model.",
        ),
    ) -> None:
        from llmplan.errors import LlmplanError
        from llmplan.report import print_report, to_json, write_report
        from llmplan.report.progress import bench_progress
        from llmplan.report.runner import DEFAULT_POLICIES, BenchConfig, run_bench, system_names
        from llmplan.workload import load_workload, parse_slo_spec, parse_window

        if policy and compare:
            raise LlmplanError("--policy and --compare are exclusive; use --compare A,B for several policies")
        policies = (
            [policy]
            if policy
            else [p.strip() for p in (compare or ",".join(DEFAULT_POLICIES)).split(",") if p.strip()]
        )
        parse_slo_spec(slo)  # fail before any work on a bad spec
        if time_scale is not None:  # the old live-only spelling of the same knob
            from llmplan.cli._flags import deprecated

            deprecated(f"--time-scale {time_scale:g}", f"--rate-scale {rate_scale * time_scale:g}")
            if not time_scale > 0:
                raise LlmplanError(f"--time-scale wants a positive number; got {time_scale:g}")
            rate_scale *= time_scale
        if calibration is not None and not calibration.is_file():
            raise LlmplanError(f"--calibration {calibration} does not exist; run `llmplan calibrate` first")
        cfg = BenchConfig(
            trace=trace,
            rate_scale=rate_scale,
            window=parse_window(window),
            max_requests=max_requests,
            seed=seed,
            slo=slo,
            model=model,
            topology=topology,
            plan=str(plan) if plan else None,
            plan_mode=plan_mode,
            policies=policies,
            router=router,
            instances=instances,
            predictor=predictor,
            block_size=block_size,
            chunked_prefill=chunked_prefill,
            disaggregation=_disagg(disaggregation),
            sweep_rates=_floats(sweep_rate, "--sweep-rate") if sweep_rate else None,
            sweep_target=sweep_target,
            calibration=str(calibration) if calibration else None,
            record_token_times=token_times,
            command=shlex.join(["llmplan", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else "",
        )
        # Load (and maybe download, with its own progress bar) before the run display starts:
        # rich allows one live display at a time.
        workload = load_workload(
            cfg.trace, rate_scale=cfg.rate_scale, window=cfg.window, max_requests=cfg.max_requests,
            seed=cfg.seed, slo=cfg.slo, show_progress=True,
        )  # fmt: skip
        if live:
            if target or sweep_rate:
                raise LlmplanError(
                    "--live deploys its own servers at the trace's rate; drop --target/--sweep-rate"
                )
            if not compare or not system_names(policies):
                raise LlmplanError("--live runs whole systems: use --compare vllm,distserve,banaserve --live")
            if instances or disaggregation or plan or calibration:
                raise LlmplanError(
                    "--live deploys 2 CPU backends per system (distserve as 1:1); "
                    "drop --instances/--disaggregation/--plan/--calibration"
                )
        # Progress goes to stderr so --json output on stdout stays parseable.
        with bench_progress(err_console) as on_progress:
            if live:
                report, loads = _live_systems(cfg, workload, live_model, _floats(live_scale, "--live-scale"),
                                              on_progress)  # fmt: skip
            elif target:
                report = _live(cfg, target, workload, 1.0, simulate_too, on_progress, jobs)
            else:
                report = run_bench(cfg, workload=workload, on_progress=on_progress, workers=jobs)
        write_report(report, out, plots=plots)
        if json_out:
            print_json(to_json(report))
            return
        print_report(report, console)
        if live:
            console.print(loads, highlight=False, soft_wrap=True)
        console.print(f"report: [bold]{out}/report.md[/] (plots, per-request CSV and report.json alongside)")


def _live(
    cfg: BenchConfig,
    target: str,
    wl: Workload,
    time_scale: float,
    simulate_too: bool,
    on_progress: OnProgress,
    jobs: int | None,
) -> BenchReport:
    """Live mode: the load generator replays the workload over HTTP; same metrics and report."""
    from llmplan.errors import LlmplanError
    from llmplan.report.runner import live_report, run_bench

    try:
        from llmplan.loadgen import replay
    except ImportError:
        raise LlmplanError(
            "live bench not built yet (llmplan.loadgen is missing); drop --target to simulate"
        ) from None
    result = replay(
        target, wl, time_scale=time_scale, seed=cfg.seed, progress=lambda d, t: on_progress("live", d, t)
    )
    extra = None
    if simulate_too:
        from llmplan.report.compare import predicted_vs_measured

        # The simulator sees the arrivals the server saw: time_scale compresses them the same way.
        from llmplan.workload.shaping import rescale_rate

        sim_wl = rescale_rate(wl, time_scale)
        sim = run_bench(cfg, workload=sim_wl, on_progress=on_progress, workers=jobs)
        extra = {f"sim:{k}": v for k, v in sim.runs.items()}
    report = live_report(cfg, target, wl, result, extra_runs=extra, extra_config={"time_scale": time_scale})
    if simulate_too:
        report.extra["Predicted (simulator) vs measured (live)"] = predicted_vs_measured(report)
    return report


def _live_systems(
    cfg: BenchConfig, wl: Workload, model: str, scales: list[float], on_progress: OnProgress
) -> tuple[BenchReport, str]:
    """--live: each system of cfg.policies as a real deployment (llmplan.frontend.live_systems)."""
    import datetime as dt
    import tempfile

    from llmplan import __version__
    from llmplan.errors import LlmplanError
    from llmplan.frontend.live_systems import LiveConfig, load_table, run_live_system, scale_lengths
    from llmplan.metrics import compute_metrics
    from llmplan.report import BenchReport
    from llmplan.report.runner import live_workload_info

    if len(scales) != 2:
        raise LlmplanError(f"--live-scale wants PROMPT,OUTPUT scales, e.g. 0.5,0.5; got {scales}")
    wl = scale_lengths(wl, scales[0], scales[1])
    live_cfg = LiveConfig(model=model, seed=cfg.seed)
    runs = []
    with tempfile.TemporaryDirectory(prefix="llmplan-live-") as tmp:
        for system in cfg.policies:
            runs.append(
                run_live_system(
                    system,
                    wl,
                    Path(tmp) / system,
                    live_cfg,
                    progress=lambda d, t, s=system: on_progress(s, d, t),
                )  # fmt: skip
            )
    loads = load_table(runs)
    report = BenchReport(
        runs={r.system: compute_metrics(r.result, wl) for r in runs},
        config={"bench": cfg.to_dict(), "live": {"model": model, "length_scale": scales,
                                                 "commands": {r.system: r.argv for r in runs}}},
        workload=live_workload_info(wl, 1.0),
        seed=cfg.seed,
        version=__version__,
        created_utc=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=cfg.command,
    )  # fmt: skip
    report.extra["Live deployments: load per backend"] = loads
    return report, loads
