"""`llmplan bench`: replay a trace against the simulator (or a live server) and write a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llmplan.cli._common import console, err_console, print_json
from llmplan.cli._flags import SERVING_ENGINE_HELP
from llmplan.cli.engine_args import (
    block_size_option,
    chunked_prefill_option,
    config_option,
    max_model_len_option,
    max_num_batched_tokens_option,
    max_num_seqs_option,
    policy_option,
    scheduler_alias_option,
)

if TYPE_CHECKING:  # the library is imported lazily inside the command body
    from llmplan.bench.runner import BenchConfig, OnProgress
    from llmplan.report import BenchReport
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
  llmplan bench --trace sharegpt -n 2000 --rate-scale 8 --compare fcfs,sjf --repeat 5 --warmup 30
  llmplan bench --target http://127.0.0.1:8000 --trace azure --max-requests 100 --rate-scale 4
  llmplan bench --trace azure -n 60 --rate-scale 0.5 --compare vllm,distserve,banaserve --live
"""


def _energy_mode(text: str) -> str:
    from llmplan.errors import LlmplanError

    mode = text.strip().lower()
    if mode not in ("max", "greenserve", "off"):
        raise LlmplanError(f"--energy {text!r}: choose max, greenserve or off")
    return mode


def _floats(text: str, flag: str) -> list[float]:
    from llmplan.errors import LlmplanError

    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise LlmplanError(
            f"{flag} wants comma-separated numbers, e.g. {flag} 2,4,6,8; got {text!r}"
        ) from None
    if not vals or not all(0 < v < float("inf") for v in vals):
        raise LlmplanError(f"{flag} wants positive numbers, e.g. {flag} 2,4,6,8; got {text!r}")
    return vals


# A bench replays one plan's instance at most this many times: a typo (--instances 100000000)
# would otherwise build that many simulated engines before the first request.
MAX_INSTANCES = 4096


def _check_options(
    *, policies, predictor, block_size, jobs, seed, sweep_target, instances, rate_scale, time_scale,
    live_scale,
) -> None:  # fmt: skip
    """Every option that a run would only trip over later (mid-progress-bar, or as a division by
    zero in the simulator) is refused here, before any work."""
    from llmplan.validate import integer, number, positive

    if block_size is not None:
        integer(block_size, "--block-size", lo=1, hi=1 << 16, fix="tokens per KV block, e.g. 16")
    if jobs is not None:
        integer(jobs, "--jobs", lo=1, hi=1024, fix="parallel simulations, e.g. --jobs 2")
    integer(seed, "--seed", lo=0, hi=(1 << 63) - 1)
    number(sweep_target, "--sweep-target", lo=0, hi=1, lo_open=True, fix="an attainment fraction, e.g. 0.9")
    if instances is not None:
        integer(instances, "--instances", lo=1, hi=MAX_INSTANCES)
    positive(rate_scale, "--rate-scale", fix="e.g. --rate-scale 2")
    if time_scale is not None:
        positive(time_scale, "--time-scale", fix="or use --rate-scale")
    _floats(live_scale, "--live-scale")
    from llmplan.predict.oracle import parse_predictor

    parse_predictor(predictor)
    from llmplan.bench.runner import system_names

    if not system_names(policies):
        from llmplan.batch import get_policy

        for name in policies:
            get_policy(name)


def _disagg(text: str | None) -> tuple[int, int] | None:
    from llmplan.errors import LlmplanError

    if not text:
        return None
    a, sep, b = text.partition(":")
    if not sep or not a.isdigit() or not b.isdigit():
        raise LlmplanError(f"--disaggregation wants P:D instance counts, e.g. 2:6; got {text!r}")
    return int(a), int(b)


def register(app: typer.Typer) -> None:  # noqa: C901 - the typer command: its option declarations, handed one to one to BenchConfig
    @app.command("bench", help=_HELP)
    def bench(
        trace: str = typer.Option(
            "azure",
            "--trace",
            "-t",
            help="azure (=azure-conv), azure-code, azure-conv-2024, azure-code-2024, "
            "sharegpt[:rate=R,tokenizer=llama3|mistral], "
            "sharegpt-multiturn[:rate=SESSIONS/S,think=S,loop=closed|open,reply_tpot=S,max_context=T,"
            "tokenizer=...], "
            "shared-prefix[:groups=G,per_group=N,system_len=T,question_len=T,output_len=T,rate=R] "
            "alpaca-like[:n=N,rate=R,prompt_mean=T,output_mean=T,...], "
            "long-context[:docs=D,questions=Q,doc_min=T,doc_max=T,question_len=T,output_len=T,rate=R] "
            "(prompts as exact token ids, docs/bench.md), synthetic[:rate=R,n=N,cv=C,arrival=poisson|gamma,"
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
            None, "--model", "-m", help="Model from the catalog (llmplan plan --help). Default llama-2-13b, "
            "or the --plan/--config's model."
        ),
        topology: str = typer.Option(
            None, "--topology", help="preset:NAME or file:PATH. Default preset:dgx-a100, or the --plan's own "
            "(a different one is refused: the plan was priced there)."
        ),
        plan: Path = typer.Option(
            None, "--plan", help="A plan saved by `llmplan plan --out` (= --config of a plan file); default: "
            "plan HELR now."
        ),
        plan_mode: str = typer.Option("HELR", "--plan-mode", help="HE, LR or HELR when planning here."),
        config: Path = config_option("bench"),
        policy: str = policy_option(),
        scheduler: str = scheduler_alias_option(),
        max_num_seqs: int = max_num_seqs_option(),
        max_num_batched_tokens: int = max_num_batched_tokens_option(),
        chunked_prefill: bool = chunked_prefill_option(),
        block_size: int = block_size_option(),
        max_model_len: int = max_model_len_option(),
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
        router: str = typer.Option(
            None,
            "--router",
            help="round-robin, least-loaded, jsq, load-aware, prefix-aware, prefix-bounded or banaserve. "
            "Default round-robin, or the --config's.",
        ),
        instances: int = typer.Option(
            None,
            "--instances",
            help="Replicate the plan's instance N times (default: every instance of the planner's "
            "fill of the topology, or of the --plan file, as planned).",
        ),
        predictor: str = typer.Option(
            "oracle",
            "--predictor",
            help="Length source for length-aware policies: oracle, noisy:ACC (e.g. noisy:0.8), const:N "
            "(every request N tokens) or noisy-cm:FILE (buckets drawn from the confusion.json that "
            "`llmplan predict eval --report-dir` saves) or learned:DIR (the LoRA classifier "
            "`llmplan predict train --out DIR` saves, run on each prompt's text: needs a trace with "
            "text, e.g. sharegpt) or gbm:DIR (the prompt-length LightGBM `llmplan predict train "
            "--kind gbm --out DIR` saves; reads prompt token counts only). Append ,book=point to book KV "
            "for the point estimate instead of the predictor's upper bound (e.g. a multi-head model's "
            "calibrated p90; see docs/predict.md). Non-oracle predictors' "
            "exact/±1 bucket accuracy, Spearman correlation and underestimate rate on the replayed "
            "requests go in the report.",
        ),
        disaggregation: str = typer.Option(
            None, "--disaggregation", help="P:D prefill/decode instance split, e.g. 2:6."
        ),
        token_times: bool = typer.Option(
            True,
            "--token-times/--no-token-times",
            help="Record every token's time (needed for ITL); off saves memory on long traces.",
        ),
        energy: str = typer.Option(
            "max",
            "--energy",
            help="Joules in the report (modelled): max (every step at the max SM clock), greenserve "
            "(EcoFreq per-iteration clocks + EcoRoute decode routing, docs/energy.md) or off.",
        ),
        repeat: int = typer.Option(
            1,
            "--repeat",
            help="Run K seeds (--seed, --seed+1, ...: synthetic arrivals, SLO draws, predictor noise) and "
            "report mean and 95%% confidence interval (Student t) of each headline metric; comparisons call "
            "a paired difference whose interval contains 0 a tie.",
        ),
        warmup: float = typer.Option(
            0.0, "--warmup", help="Leave requests arriving in the first S seconds out of every statistic "
            "(they still run and stay in the per-request CSV, flagged in_warmup)."
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
        allow_profile_mismatch: bool = typer.Option(
            False,
            "--allow-profile-mismatch",
            help="Use a --calibration profile measured on another model, device or dtype anyway.",
        ),
        serving_engine: str = typer.Option(
            None,
            "--serving-engine",
            help=SERVING_ENGINE_HELP + " Default: the --config/--plan's, else vllm (the simulator "
            "reproduces vLLM V1's scheduler). With --calibration the profile's measured steps already "
            "include it.",
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
        from llmplan.bench.runner import DEFAULT_POLICIES, BenchConfig, run_bench, system_names
        from llmplan.cli.engine_args import engine_args, policy_from
        from llmplan.deployment import DeploymentSpec
        from llmplan.errors import LlmplanError
        from llmplan.opcost.engines import canonical_engine
        from llmplan.report import print_report, to_json, write_report
        from llmplan.report.progress import bench_progress
        from llmplan.workload import load_workload, parse_slo_spec, parse_window

        policy = policy_from(policy, scheduler)
        deployment, plan, model = _deployment_source(config, plan, model, topology)
        engine_flags = dict(
            policy=policy, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            chunked_prefill=chunked_prefill, block_size=block_size, max_model_len=max_model_len,
        )  # fmt: skip
        base = DeploymentSpec.from_dict(deployment).engine if deployment else None
        engine = engine_args(base, **engine_flags)
        if simulate_too and not target:
            raise LlmplanError(
                "--simulate compares a live server with its simulation: give --target URL (without --target "
                "bench always simulates)"
            )
        if policy is None and config is not None and not compare:
            policy = engine.policy  # the spec's own policy, not the default comparison
        if policy and compare:
            raise LlmplanError("--policy and --compare are exclusive; use --compare A,B for several policies")
        policies = (
            [policy]
            if policy
            else [p.strip() for p in (compare or ",".join(DEFAULT_POLICIES)).split(",") if p.strip()]
        )
        parse_slo_spec(slo)  # fail before any work on a bad spec
        _check_options(
            policies=policies, predictor=predictor, block_size=block_size, jobs=jobs, seed=seed,
            sweep_target=sweep_target, instances=instances, rate_scale=rate_scale, time_scale=time_scale,
            live_scale=live_scale,
        )  # fmt: skip
        from llmplan.validate import integer, number

        integer(repeat, "--repeat", lo=1, hi=100, fix="seeds to run, e.g. --repeat 3")
        number(warmup, "--warmup", lo=0, fix="seconds of warm-up to leave out, e.g. --warmup 60")
        if (repeat > 1 or warmup > 0) and (target or live):
            raise LlmplanError(
                "--repeat/--warmup apply to simulated runs; a live replay (--target/--live) runs once: "
                "drop them"
            )
        if time_scale is not None:  # the old live-only spelling of the same knob
            from llmplan.cli._flags import deprecated

            deprecated(f"--time-scale {time_scale:g}", f"--rate-scale {rate_scale * time_scale:g}")
            rate_scale *= time_scale
        if calibration is not None and not calibration.is_file():
            what = "is a directory, not a profile file" if calibration.is_dir() else "does not exist"
            raise LlmplanError(f"--calibration {calibration} {what}; run `llmplan calibrate` first")
        cfg = BenchConfig(
            trace=trace,
            rate_scale=rate_scale,
            window=parse_window(window),
            max_requests=max_requests,
            seed=seed,
            slo=slo,
            model=model or "llama-2-13b",
            topology=topology,
            plan=str(plan) if plan else None,
            deployment=deployment,
            plan_mode=plan_mode,
            policies=policies,
            router=router or (DeploymentSpec.from_dict(deployment).router if deployment else "round-robin"),
            instances=instances,
            predictor=predictor,
            engine=engine,
            disaggregation=_disagg(disaggregation),
            sweep_rates=_floats(sweep_rate, "--sweep-rate") if sweep_rate else None,
            sweep_target=sweep_target,
            calibration=str(calibration) if calibration else None,
            allow_profile_mismatch=allow_profile_mismatch,
            serving_engine=canonical_engine(serving_engine) if serving_engine else None,
            record_token_times=token_times,
            energy=_energy_mode(energy),
            repeat=repeat,
            warmup_s=warmup,
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
                from llmplan.bench.live import run_live_comparison

                report, loads = run_live_comparison(
                    cfg, workload, live_model, _floats(live_scale, "--live-scale"), on_progress
                )
            elif target:
                report = _live(cfg, target, workload, 1.0, simulate_too, on_progress, jobs, engine_flags)
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
    engine_flags: dict | None = None,
) -> BenchReport:
    """Live mode: the load generator replays the workload over HTTP; same metrics and report."""
    from llmplan.bench.runner import live_report, run_bench
    from llmplan.loadgen import replay

    result = replay(
        target, wl, time_scale=time_scale, seed=cfg.seed, progress=lambda d, t: on_progress("live", d, t)
    )
    extra = None
    served = fetch_deployment(target)
    extra_config: dict = {"time_scale": time_scale, "live_deployment": served}
    if simulate_too:
        from llmplan.report.compare import predicted_vs_measured

        # The simulator sees the arrivals the server saw: time_scale compresses them the same way.
        from llmplan.workload.shaping import rescale_rate

        sim_cfg = simulated_config(cfg, served, target, engine_flags or {})
        sim_wl = rescale_rate(wl, time_scale)
        sim = run_bench(sim_cfg, workload=sim_wl, on_progress=on_progress, workers=jobs)
        extra = {f"sim:{k}": v for k, v in sim.runs.items()}
        extra_config["simulated"] = {k: sim.config[k] for k in ("cluster", "simulator", "deployments")}
    report = live_report(cfg, target, wl, result, extra_runs=extra, extra_config=extra_config)
    if simulate_too:
        report.extra["Predicted (simulator) vs measured (live)"] = predicted_vs_measured(report)
    return report


def fetch_deployment(target: str) -> dict | None:
    """The deployment a live server reports at GET /v1/deployment (None when it has no such
    endpoint, e.g. a vLLM server)."""
    import httpx

    url = target.rstrip("/") + "/v1/deployment"
    try:
        from llmplan.loadgen.client import auth_headers

        resp = httpx.get(url, timeout=10.0, trust_env=False, headers=auth_headers())
    except httpx.HTTPError:
        return None
    if resp.status_code == 401:
        from llmplan.errors import LlmplanError

        raise LlmplanError(f"{url} asks for an API key (401); set LLMPLAN_API_KEY to the server's --api-key")
    if resp.status_code != 200:
        return None
    try:
        data = resp.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def simulated_config(cfg: BenchConfig, served: dict | None, target: str, flags: dict) -> BenchConfig:
    """What ``--target URL --simulate`` simulates: ``--config``'s deployment when given, else
    the one the server reports (its model, instances, KV pool and scheduler settings), with
    the scheduler flags the user typed on top. Never a default cluster."""
    from dataclasses import replace

    from llmplan.cli.engine_args import engine_args
    from llmplan.deployment import DeploymentSpec
    from llmplan.errors import LlmplanError

    if cfg.deployment is not None or cfg.plan:
        return cfg
    if served is None:
        raise LlmplanError(
            f"{target} does not report its deployment (GET /v1/deployment), so there is nothing faithful to "
            "simulate; pass --config SPEC (e.g. from `llmplan plan --out`) naming what it runs"
        )
    spec = DeploymentSpec.from_dict(served, f"{target}/v1/deployment")
    engine = engine_args(spec.engine, **flags)
    return replace(cfg, deployment=spec.to_dict(), model=spec.model, engine=engine, policies=[engine.policy],
                   router=spec.router)


def _deployment_source(
    config: Path | None, plan: Path | None, model: str | None, topology: str | None
) -> tuple[dict | None, Path | None, str | None]:
    """(--config's deployment as a dict, the plan file it is, the model) from --config/--plan.

    A plan file brings its instances and topology (build_cluster refuses another --topology);
    a bare spec brings its instances; an explicit --model that differs from either is refused.
    """
    from llmplan.deployment import load_spec, plan_of
    from llmplan.errors import LlmplanError

    if config is not None and plan is not None:
        raise LlmplanError(
            "--config and --plan both name a deployment; give one (a plan file works as --config)"
        )
    path = config if config is not None else plan
    if path is None:
        return None, None, model
    flag = "--config" if config is not None else "--plan"
    spec = load_spec(path)
    if model is not None and model.lower() != spec.model.lower():
        raise LlmplanError(
            f"--model {model} conflicts with {flag} {path}, which deploys {spec.model}; drop --model"
        )
    from llmplan.bench.runner import topology_source

    if topology is not None and spec.topology and topology_source(topology) != topology_source(spec.topology):
        raise LlmplanError(
            f"--topology {topology} conflicts with {flag} {path}, planned on {spec.topology}; "
            "drop --topology (the plan brings its own) or re-plan on that topology"
        )
    is_plan = plan_of(path) is not None
    return spec.to_dict(), (path if is_plan else None), spec.model
