"""`llmplan calibrate`: measure the engine's per-iteration cost and write a simulator profile."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Measure the built-in engine's per-iteration cost on this device and write a profile
that the simulator prices batches with (`llmplan bench --simulate --calibration FILE`).

It times prefill chunks (16..512 tokens, with and without cached context), decode batches
(1..--max-batch sequences at 32..--max-context tokens of context) and a few mixed steps,
then fits t = c0 + a*prefill_tokens + b*prefill_attn + c*decode_seqs + d*decode_ctx
(non-negative least squares on relative error) and prints measured vs fitted per shape.

Operator profiles (the per-operator cost model, docs/calibrate.md):
--ops times a layer's operators into a Vidur-format directory; --profiles DIR reads such
directories (or Vidur's published compute/ tree), fits each GPU's efficiency curves and, with
--price MODEL, prices a model from them; --check DIR predicts every row of DIR without its own
timings and prints predicted vs measured with median and p90 error.

Examples:

  llmplan calibrate --dummy-weights llama-120m --out profiles/llama-120m-cpu.json

  llmplan calibrate --check ../shared/gpu-profiles/vidur-2024/compute/a100

  llmplan calibrate --ops --dummy-weights llama-tiny --device cpu --out ops/llama-tiny-cpu

  llmplan calibrate --model ~/models/Qwen2-0.5B --device cuda --dtype bfloat16 --out q05.json
"""


def register(app: typer.Typer) -> None:
    @app.command("calibrate", help=HELP)
    def calibrate_cmd(
        out: Path = typer.Option(
            None,
            "--out",
            "-o",
            help="Profile JSON to write (a directory with --ops, a params JSON with --profiles).",
        ),
        profiles: Path = typer.Option(
            None,
            "--profiles",
            help="Read operator profiles (Vidur compute/ tree or `--ops` output) and fit them.",
        ),
        check: Path = typer.Option(
            None, "--check", help="Predict every row of these profiles without their timings (leave-one-out)."
        ),
        ops: bool = typer.Option(False, "--ops", help="Time a layer's operators on --device into --out DIR."),
        price: str = typer.Option(
            None, "--price", help="With --profiles: catalog model to price per iteration."
        ),
        gpu: str = typer.Option(None, "--gpu", help="With --price: GPU of the profiles to use (spec key)."),
        tp: int = typer.Option(1, "--tp", help="Tensor-parallel degree (--ops, --price)."),
        max_tokens: int = typer.Option(2048, "--max-tokens", help="With --ops: largest token count timed."),
        allow_profile_mismatch: bool = typer.Option(
            False, "--allow-profile-mismatch", help="Price with a profile of other dims/GPU/TP anyway."
        ),
        dummy_weights: str = typer.Option(
            None, "--dummy-weights", help="Catalog model with random weights (e.g. llama-tiny, llama-120m)."
        ),
        model: Path = typer.Option(None, "--model", help="Local HF model directory (safetensors)."),
        plan: Path = typer.Option(None, "--plan", help="Plan JSON placing layers on devices."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ... (without --plan)."),
        dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16."),
        block_size: int = typer.Option(16, "--block-size", help="KV block size in tokens."),
        max_batch: int = typer.Option(32, "--max-batch", help="Largest decode batch to time."),
        max_context: int = typer.Option(1024, "--max-context", help="Longest decode context to time."),
        max_chunk: int = typer.Option(512, "--max-chunk", help="Largest prefill chunk to time."),
        repeats: int = typer.Option(3, "--repeats", help="Timed runs per shape (median is kept)."),
        threads: int = typer.Option(None, "--threads", help="torch CPU threads (default: torch's)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the dummy weights."),
        as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON instead of a table."),
        clock_sweep: str = typer.Option(
            None, "--clock-sweep",
            help="With --ops --device cuda: MHZ,MHZ,... lock each SM clock (NVML), time, read energy, "
            "unlock; samples to --out/power_samples.jsonl.",
        ),
        power_samples: Path = typer.Option(
            None, "--power-samples",
            help="Fit --gpu's clock power model (static/dyn/alpha) to recorded samples (JSON lines).",
        ),
    ) -> None:
        from llmplan.cli._common import console, print_json
        from llmplan.errors import LlmplanError

        if tp < 1 or max_tokens < 1:
            raise LlmplanError("--tp and --max-tokens must be >= 1")
        if check is not None:
            from llmplan.cli.calibrate_ops import run_check

            return run_check(check, profiles, as_json, console, print_json)
        if power_samples is not None:
            return _fit_power_samples(power_samples, gpu, as_json, console, print_json)
        if clock_sweep is not None and not ops:
            raise LlmplanError(
                "--clock-sweep goes with --ops --device cuda (it re-times the operators per clock)"
            )
        if ops:
            from llmplan.cli.calibrate_ops import run_ops

            if out is None or dummy_weights is None:
                raise LlmplanError(
                    "--ops needs --dummy-weights NAME (the catalog dims to time) and --out DIR"
                )
            sweep = None
            if clock_sweep is not None:
                from llmplan.energy.sweep import open_sweep, parse_clocks

                clocks = parse_clocks(clock_sweep)
                sweep = (*open_sweep(device), clocks)  # refused here, before anything is timed
            run_ops(
                out,
                dummy_weights,
                device,
                dtype,
                tp,
                max_tokens,
                repeats,
                threads,
                as_json,
                console,
                print_json,
            )
            if sweep is not None:
                _clock_sweep(
                    out, dummy_weights, device, dtype, tp, max_tokens, repeats, sweep, as_json, console
                )
            return None
        if profiles is not None:
            from llmplan.cli.calibrate_ops import run_profiles

            return run_profiles(
                profiles, out, price, gpu, tp, allow_profile_mismatch, as_json, console, print_json
            )
        if out is None:
            raise LlmplanError("give --out FILE for the engine profile (or --profiles / --check / --ops)")
        if (model is None) == (dummy_weights is None):
            raise LlmplanError("give exactly one of --model PATH or --dummy-weights NAME")
        if repeats < 1 or max_batch < 1 or max_context < 1 or max_chunk < 16:
            raise LlmplanError("--repeats, --max-batch and --max-context must be >= 1, --max-chunk >= 16")
        from llmplan.cli._serve_checks import check_device_dtype
        from llmplan.validate import integer

        integer(block_size, "--block-size", lo=1, hi=1 << 16, fix="tokens per KV block, e.g. 16")
        if threads is not None:
            integer(threads, "--threads", lo=1, hi=4096)
        check_device_dtype(device, dtype)
        run_calibration(
            out=out,
            model=model,
            dummy_weights=dummy_weights,
            plan=plan,
            device=device,
            dtype=dtype,
            block_size=block_size,
            max_batch=max_batch,
            max_context=max_context,
            max_chunk=max_chunk,
            repeats=repeats,
            threads=threads,
            seed=seed,
            as_json=as_json,
            console=console,
            print_json=print_json,
        )


def _fit_power_samples(path: Path, gpu: str | None, as_json: bool, console, print_json) -> None:
    from llmplan.energy.sweep import fit_samples_file
    from llmplan.errors import LlmplanError

    if not gpu:
        raise LlmplanError(
            "--power-samples needs --gpu NAME (the GPU the samples come from, e.g. A100-SXM-80GB)"
        )
    r = fit_samples_file(path, gpu)
    if as_json:
        print_json(r)
        return
    p, f = r["prior"], r["fitted"]
    console.print(f"{r['gpu']}: {r['samples']} samples at {len(r['clocks_mhz'])} clocks "
                  f"({', '.join(map(str, r['clocks_mhz']))} MHz), RMS error {r['rms_w']:.1f} W")
    for k in ("static_w", "dyn_w", "alpha"):
        console.print(f"  {k:9} {p[k]:8.2f} (prior) -> {f[k]:8.2f} (fitted)")


def _clock_sweep(out, dummy_weights, device, dtype, tp, max_tokens, repeats, sweep, as_json, console) -> None:
    from llmplan.energy.sweep import sweep_ops

    reader, index, clocks = sweep
    path, samples = sweep_ops(
        out, dummy_weights, device, dtype, tp, max_tokens, repeats, reader, index, clocks
    )
    if not as_json:
        for s in samples:
            console.print(f"clock {s['requested_mhz']:.0f} MHz (read {s['mhz']:.0f}): {s['power_w']:.1f} W, "
                          f"activity {s['activity']:.0%}, {s['joules']:.1f} J in {s['seconds']:.2f} s")
        console.print(f"power samples -> {path} (fit: llmplan calibrate --power-samples {path} --gpu NAME)")


def run_calibration(
    *,
    out,
    model,
    dummy_weights,
    plan,
    device,
    dtype,
    block_size,
    max_batch,
    max_context,
    max_chunk,
    repeats,
    threads,
    seed,
    as_json,
    console,
    print_json,
) -> None:
    import platform
    import time

    from rich.table import Table

    from llmplan import progress

    with progress.task(f"loading torch and {dummy_weights or model}"):
        import torch

        from llmplan.runtime.calibration import fit_profile
        from llmplan.runtime.engine.executor import TorchExecutor
        from llmplan.runtime.engine.kvcache import PagedKVCache
        from llmplan.runtime.engine.measure import default_points, measure_points
        from llmplan.runtime.factory import build_model

        if threads:
            torch.set_num_threads(threads)
        cfg, m = build_model(model, dummy_weights, plan, device, dtype, seed)
    max_context = min(max_context, cfg.max_model_len - 1)
    points = default_points(max_batch, max_context, max_chunk)
    tokens = max(sum(-(-t // block_size) for t in p.tokens_needed()) for p in points)
    kv = PagedKVCache(cfg, tokens, block_size, m.layer_devices, m.dtype)
    ex = TorchExecutor(m, kv)
    name = dummy_weights or Path(str(model)).name
    import os

    from llmplan.energy.measure import POWERCAP, EnergyMeter

    meter = EnergyMeter(rapl_root=os.environ.get("LLMPLAN_POWERCAP") or POWERCAP)
    meter.start()
    t0 = time.perf_counter()
    with progress.task(f"calibrate {name}", total=len(points) * repeats, unit="timed runs") as bar:

        def tick(p) -> None:
            bar.update(completed=bar.completed + 1, description=f"calibrate {name}: {p.label()}")

        samples = measure_points(ex, points, repeats=repeats, vocab_size=cfg.vocab_size, progress=tick)
    energy = meter.stop()  # joules over the timed runs: NVML (GPUs), RAPL (CPU) or none ("modelled")
    devices = sorted({str(d) for d in m.layer_devices})
    prof = fit_profile(
        samples,
        model=name,
        device=",".join(devices),
        dtype=dtype,
        block_size=block_size,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        host=platform.node(),
        cpu=platform.processor() or platform.machine(),
        measured_s=round(time.perf_counter() - t0, 1),
        repeats=repeats,
        gpu=torch.cuda.get_device_name(m.layer_devices[0]) if m.layer_devices[0].type == "cuda" else None,
        energy=energy,
    )
    prof.save(out)
    if as_json:
        print_json(prof.to_dict())
        return
    table = Table(title=f"{name} on {prof.device} ({dtype}, {prof.meta['threads']} threads)")
    for col in ("shape", "measured ms", "fitted ms", "error"):
        table.add_column(col, justify="left" if col == "shape" else "right")
    for s in samples:
        fit = prof.iteration_time(s.shape)
        table.add_row(
            s.label, f"{s.time_s * 1e3:.2f}", f"{fit * 1e3:.2f}", f"{(fit - s.time_s) / s.time_s:+.1%}"
        )
    console.print(table)
    if energy["joules"] is not None:
        console.print(f"energy over the timed runs: {energy['joules']:.1f} J in {energy['seconds']:.1f} s "
                      f"({energy['source']}; {energy['note'] or 'measured'})")
    else:
        console.print(f"energy: {energy['note']}")
    c = prof.coef
    console.print(
        f"t = {c['const'] * 1e3:.3f} ms + {c['prefill_tokens'] * 1e6:.2f} us/prefill token + "
        f"{c['prefill_attn'] * 1e9:.3f} ns/attention pair + {c['decode_seqs'] * 1e6:.1f} us/decode seq + "
        f"{c['decode_ctx'] * 1e9:.2f} ns/context token"
    )
    f = prof.meta["fit"]
    console.print(
        f"fit over {f['num_samples']} shapes: median error {f['median_rel_error']:.1%}, "
        f"p90 {f['p90_rel_error']:.1%}, max {f['max_rel_error']:.1%}  ->  wrote {out}"
    )
