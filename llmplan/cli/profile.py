"""`llmplan profile`: collect, fit and query the K-Prototypes resource profiler."""

from __future__ import annotations

from pathlib import Path

import typer

from llmplan.cli._common import console, print_json

profile_app = typer.Typer(
    name="profile",
    help=(
        "Collect resource profiles through an OpenAI-compatible endpoint, fit the K-Prototypes resource "
        "profiler (per-cluster RandomForest/GradientBoosting/LightGBM), and predict utilisation, memory "
        "and latency for new prompts.\n\n"
        "Example: llmplan profile collect --endpoint http://127.0.0.1:8000 --out prof.csv && "
        "llmplan profile fit prof.csv --out prof/ && llmplan profile predict 'Summarize ...' --profile prof/"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@profile_app.command("collect")
def collect_cmd(
    endpoint: str = typer.Option("http://127.0.0.1:8000", "--endpoint", help="OpenAI-compatible base URL."),
    out: Path = typer.Option(Path("profile.csv"), "--out", "-o", help="CSV written row by row."),
    model: str = typer.Option(None, "--model", help="Model name (default: the first in /v1/models)."),
    suite: Path = typer.Option(
        None, "--suite", help="JSONL {id, task, lang, prompt}; default: the shipped suite."
    ),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Override every prompt's reply budget."),
    sampler: str = typer.Option("auto", "--sampler", help="auto | nvml (GPU, device-wide) | psutil (CPU)."),
    pid: int = typer.Option(
        None, "--pid", help="psutil: sample this process and its children (else system-wide)."
    ),
    device: int = typer.Option(0, "--device", help="nvml: GPU index."),
    interval: float = typer.Option(0.05, "--interval", help="Seconds between samples."),
    repeat: int = typer.Option(1, "--repeat", help="Run the suite this many times."),
    limit: int = typer.Option(None, "--limit", help="Only the first N prompts."),
    shuffle: bool = typer.Option(True, "--shuffle/--no-shuffle", help="Interleave tasks (seeded)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run the task suite through the endpoint, one request at a time, sampling utilisation and memory."""
    from llmplan import progress
    from llmplan.profile.collect import collect, load_suite
    from llmplan.validate import integer, number

    number(interval, "--interval", lo=0.001, hi=60, fix="seconds between samples, e.g. 0.05")
    integer(repeat, "--repeat", lo=1, hi=10_000)
    if limit is not None:
        integer(limit, "--limit", lo=1)
    if max_tokens is not None:
        integer(max_tokens, "--max-tokens", lo=1, hi=1 << 24)
    integer(device, "--device", lo=0, hi=1023)
    if sampler not in ("auto", "nvml", "psutil"):
        from llmplan.errors import LlmplanError

        raise LlmplanError(f"unknown --sampler {sampler!r}; choose auto, nvml or psutil")
    n = len(load_suite(suite)[:limit]) * repeat
    from llmplan.profile.collect import make_meter

    meter = make_meter()
    with progress.task("profile collect", total=n, unit="requests") as bar:
        collect(
            endpoint,
            out,
            model=model,
            suite=suite,
            max_tokens=max_tokens,
            sampler=sampler,
            pid=pid,
            device=device,
            interval_s=interval,
            repeat=repeat,
            limit=limit,
            shuffle=shuffle,
            seed=seed,
            on_row=lambda _row: bar.advance(),
            meter=meter,
        )
    console.print(f"wrote {n} rows to {out}")
    if meter.source == "nvml":
        console.print(f"energy_j: NVML energy counter of GPU {device}, per request (device-wide)")
    elif meter.source == "rapl":
        console.print(f"energy_j: {meter.note}, per request")
    else:
        console.print(f"energy_j left empty, energy_source=modelled: {meter.note}")


@profile_app.command("fit")
def fit_cmd(
    data: Path = typer.Argument(..., help="CSV from `llmplan profile collect`."),
    out: Path = typer.Option(Path("profiler"), "--out", "-o", help="Directory for the fitted profiler."),
    k: int = typer.Option(None, "--k", help="Number of clusters (default: elbow method over 2..8)."),
    gamma: float = typer.Option(0.5, "--gamma", help="K-Prototypes weight of a categorical mismatch."),
    seed: int = typer.Option(0, "--seed"),
    test_frac: float = typer.Option(0.25, "--test-frac", help="Held-out share for the <10%-error report."),
    n_estimators: int = typer.Option(100, "--n-estimators", help="Trees per candidate model."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cluster with K-Prototypes, pick the best model per cluster by CV, compare with a global model."""
    from llmplan import progress
    from llmplan.profile.report import fit_and_evaluate, read_csv, render
    from llmplan.validate import integer, number

    if k is not None:
        integer(k, "--k", lo=1, hi=100, fix="or omit it for the elbow method")
    number(gamma, "--gamma", lo=0, fix="the weight of a categorical mismatch, e.g. 0.5")
    number(test_frac, "--test-frac", lo=0, hi=1, lo_open=True, hi_open=True, fix="e.g. 0.25")
    integer(n_estimators, "--n-estimators", lo=1, hi=10_000)
    with progress.task("profile fit: K-Prototypes, then per-cluster models by cross-validation"):
        result = fit_and_evaluate(
            read_csv(data), out, k=k, gamma=gamma, seed=seed, test_frac=test_frac, n_estimators=n_estimators
        )
    if as_json:
        print_json(result)
        return
    console.print(render(result), highlight=False)
    console.print(f"saved to {out} (report.md, report.json{', elbow.png' if result['elbow'] else ''})")


@profile_app.command("predict")
def predict_cmd(
    prompts: list[str] = typer.Argument(..., help="One or more prompts."),
    profile: Path = typer.Option(Path("profiler"), "--profile", "-p", help="A fitted profiler directory."),
    task: str = typer.Option(None, "--task", help="Task type (default: inferred from the text)."),
    lang: str = typer.Option(None, "--lang", help="zh or en (default: detected)."),
    output_tokens: int = typer.Option(None, "--output-tokens", help="Expected reply length in tokens."),
    predictor: Path = typer.Option(
        None, "--predictor", help="Length predictor dir to estimate reply length."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Predict max/mean utilisation, max/mean memory and latency per prompt."""
    from llmplan.errors import LlmplanError
    from llmplan.predict.tokenize import count_tokens
    from llmplan.profile.features import LANGUAGES, TASK_TYPES, feature_frame
    from llmplan.profile.profiler import ResourceProfiler

    if task is not None and task not in TASK_TYPES:
        raise LlmplanError(f"unknown task {task!r}; choose one of {', '.join(TASK_TYPES)}")
    if lang is not None and lang not in LANGUAGES:
        raise LlmplanError(f"unknown language {lang!r}; choose zh or en")
    if output_tokens is not None:
        from llmplan.validate import integer

        integer(output_tokens, "--output-tokens", lo=1, hi=1 << 24, fix="an expected reply length")
    if predictor is not None and not predictor.is_dir():
        raise LlmplanError(
            f"--predictor {predictor} is not a directory; train one with `llmplan predict train --out DIR`"
        )
    prof = ResourceProfiler.load(profile)
    if output_tokens is not None:
        est = [output_tokens] * len(prompts)
    elif predictor is not None:
        from llmplan.predict.learned import LearnedLengthPredictor

        est = LearnedLengthPredictor(predictor).predict(prompts).lengths
    else:
        est = [256] * len(prompts)
    feats = feature_frame(prompts, count_tokens(prompts), est, [task] * len(prompts), [lang] * len(prompts))
    pred = prof.predict(feats)
    rows = [
        {
            "prompt": p,
            **feats.iloc[i][["task", "lang", "input_tokens", "output_tokens_est"]].to_dict(),
            **pred.iloc[i].to_dict(),
        }
        for i, p in enumerate(prompts)
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(
            f"[{r['task']}/{r['lang']} in={r['input_tokens']:.0f} out~{r['output_tokens_est']:.0f} "
            f"cluster {int(r['cluster'])}] util max {r['max_util']:.1f}% mean {r['mean_util']:.1f}% · "
            f"mem max {r['max_mem_mb']:.0f} MiB mean {r['mean_mem_mb']:.0f} MiB · "
            f"latency {r['latency_s']:.3f}s  {r['prompt'][:60]}",
            highlight=False,
            markup=False,  # "[qa/en in=...]" and the prompt's own brackets are text, not rich markup
        )


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app, name="profile")
