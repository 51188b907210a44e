"""`llmplan calibrate --profiles / --check / --ops`: operator profiles in and out, and the fidelity check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError


def _pct(x: float) -> str:
    return "-" if x != x else f"{x:.1%}"


def run_check(check: Path, profiles: Path | None, as_json: bool, console: Any, print_json: Any) -> None:
    """Predict every row of ``check`` without its own timings (leave-one-out over the other profiles)."""
    from rich.table import Table

    from llmplan.opcost.check import check_all, pooled
    from llmplan.opcost.profiles import discover

    targets = discover(check)
    others = discover(profiles) if profiles else []
    results = check_all(targets, others)
    pool = pooled(results)
    if as_json:
        print_json({"profiles": [r.summary() for r in results], "pooled": pool})
        return
    for r in results:
        s = r.summary()
        t = Table(title=f"{r.model} on {r.gpu}: {r.mode} (fitted on {r.fitted_on})")
        for col in ("tp", "iteration", "measured ms", "predicted ms", "error"):
            t.add_column(col, justify="right")
        for it in s["iterations"]:
            label = f"prefill {it['tokens']}" if it["phase"] == "prefill" else f"decode x{it['tokens']} @1k"
            t.add_row(
                str(it["tp"]),
                label,
                f"{it['measured_ms']:.3f}",
                f"{it['predicted_ms']:.3f}",
                f"{it['error']:+.1%}",
            )
        console.print(t)
        ops = "  ".join(f"{op} {_pct(v['median'])}/{_pct(v['p90'])}" for op, v in s["ops"].items())
        console.print(f"per operator |error| median/p90: {ops}")
        it = s["iteration"]
        console.print(
            f"per iteration |error|: median {_pct(it['median'])}, p90 {_pct(it['p90'])} ({it['n']} rows)\n"
        )
    t = Table(title="all profiles: |predicted / measured - 1|")
    for col in ("operator", "rows", "median", "p90"):
        t.add_column(col, justify="right" if col != "operator" else "left")
    for op, v in pool["ops"].items():
        t.add_row(op, str(v["n"]), _pct(v["median"]), _pct(v["p90"]))
    it = pool["iteration"]
    t.add_row("per iteration (non-attention)", str(it["n"]), _pct(it["median"]), _pct(it["p90"]))
    console.print(t)


def run_profiles(  # noqa: C901 - read, fit, write, price and print in one pass; each branch is one option
    profiles: Path,
    out: Path | None,
    price: str | None,
    gpu: str | None,
    tp: int,
    allow_mismatch: bool,
    as_json: bool,
    console: Any,
    print_json: Any,
) -> None:
    """Read profiles, fit each GPU's curves (``--out`` writes them), optionally price a model with them."""
    from rich.table import Table

    from llmplan.fileio import write_text_atomic
    from llmplan.opcost.check import gpu_peaks
    from llmplan.opcost.fit import fit_gpu
    from llmplan.opcost.ops import MeasuredTables, OpModel
    from llmplan.opcost.profiles import ModelDims, discover, group_by_gpu

    profs = discover(profiles)
    by_gpu = group_by_gpu(profs)
    fitted: dict[str, Any] = {}
    for g, ps in sorted(by_gpu.items()):
        peak, bw = gpu_peaks(g, ps[0])
        fitted[g] = fit_gpu(ps, peak, bw, g).to_dict()
    result: dict[str, Any] = {
        "profiles": [{**p.meta.to_dict(), "rows": len(p.tokens), "path": p.path} for p in profs],
        "fitted": fitted,
    }
    if price:
        from llmplan.models import get_model_spec

        spec = get_model_spec(price)
        dims = ModelDims.from_spec(spec)
        target_gpu = gpu or (next(iter(by_gpu)) if len(by_gpu) == 1 else None)
        if target_gpu is None:
            raise LlmplanError(f"{profiles} holds profiles of {', '.join(by_gpu)}; name one with --gpu")
        on_gpu = by_gpu.get(target_gpu, [])
        match = [p for p in on_gpu if p.meta.mismatch(dims=dims, tp=tp) is None]
        if not match:
            why = (
                on_gpu[0].meta.mismatch(dims=dims, tp=tp)
                if on_gpu
                else f"no profile in it was measured on {target_gpu}"
            )
            if not allow_mismatch:
                raise LlmplanError(
                    f"no profile in {profiles} matches {price} on {target_gpu} at TP {tp} ({why}); "
                    "give a matching profile or pass --allow-profile-mismatch to price from the fitted curves"
                )
        peak, bw = gpu_peaks(target_gpu, on_gpu[0] if on_gpu else None)
        from llmplan.opcost.ops import GpuOpParams

        params = GpuOpParams.from_dict(fitted[target_gpu]) if target_gpu in fitted else None
        om = OpModel.for_gpu(
            target_gpu,
            peak,
            bw,
            params=params,
            tables=MeasuredTables.from_profiles(on_gpu) if on_gpu else None,
        )
        layers = spec.num_hidden_layers
        rows = []
        for phase, pts in (("prefill", (128, 512, 2048)), ("decode", (1, 8, 32, 128))):
            for m in pts:
                rows.append(
                    {
                        "phase": phase,
                        "tokens": m,
                        "non_attention_ms": layers * om.layer_nonattn_time(dims, m, tp) * 1e3,
                        "per_layer_ms": {k: v * 1e3 for k, v in om.layer_ops(dims, m, tp).items()},
                    }
                )
        result["price"] = {
            "model": price,
            "gpu": target_gpu,
            "tp": tp,
            "matched_profile": match[0].meta.model if match else None,
            "rows": rows,
        }
    if out:
        from llmplan.opcost.params import fitted as committed

        base = committed()
        doc = {
            "source": f"llmplan calibrate --profiles {profiles}",
            "reference_gpu": base["reference_gpu"],
            "gpus": {**base["gpus"], **fitted},
            "collectives": base["collectives"],
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, json.dumps(doc, indent=1, sort_keys=True) + "\n")
        result["wrote"] = str(out)
    if as_json:
        print_json(result)
        return
    t = Table(title=f"operator profiles in {profiles}")
    for col in ("GPU", "model", "dims", "dtype", "TP", "rows", "source"):
        t.add_column(col)
    for p in profs:
        m = p.meta
        t.add_row(
            m.gpu, m.model, m.dims.describe(), m.dtype, "/".join(map(str, m.tp)), str(len(p.tokens)), m.source
        )
    console.print(t)
    for g, f in fitted.items():
        ge = f["gemm"]
        console.print(
            f"{g}: GEMM compute eff {ge['compute_eff']:.2f}, memory eff {ge['memory_eff']:.2f}, "
            f"launch {ge['launch_s'] * 1e6:.1f} us, small-M half {ge['m_half']:.1f} tokens, "
            f"wave weight {ge['wave_weight']:.2f}"
        )
    if "price" in result:
        pr = result["price"]
        t = Table(title=f"{pr['model']} on {pr['gpu']} TP {pr['tp']}: non-attention time per iteration")
        for col in ("iteration", "ms"):
            t.add_column(col, justify="right")
        for r in pr["rows"]:
            lab = f"prefill {r['tokens']}" if r["phase"] == "prefill" else f"decode x{r['tokens']}"
            t.add_row(lab, f"{r['non_attention_ms']:.3f}")
        console.print(t)
    if out:
        console.print(f"wrote {out} (use it with LLMPLAN_OPCOST_PARAMS={out})")


def run_ops(
    out: Path,
    dummy_weights: str,
    device: str,
    dtype: str,
    tp: int,
    max_tokens: int,
    repeats: int,
    threads: int | None,
    as_json: bool,
    console: Any,
    print_json: Any,
) -> None:
    import torch

    from llmplan.models import get_model_spec
    from llmplan.opcost.measure import (
        DEFAULT_TOKENS,
        device_peaks,
        measure_attention,
        measure_ops,
        write_attention,
        write_profile,
    )
    from llmplan.opcost.profiles import ModelDims, ProfileMeta

    if threads:
        torch.set_num_threads(threads)
    spec = get_model_spec(dummy_weights)
    dims = ModelDims.from_spec(spec)
    tokens = [t for t in DEFAULT_TOKENS if t <= max_tokens] or [1]
    rows = measure_ops(dims, device=device, dtype=dtype, tp=tp, tokens=tokens, repeats=repeats)
    dev = torch.device(device)
    tdt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    peak, bw = device_peaks(dev, tdt)
    if dev.type == "cuda":
        from llmplan.topology.specs import match_model

        name = torch.cuda.get_device_name(dev)
        gpu = match_model(name) or name
    else:
        gpu = "cpu"
    meta = ProfileMeta(
        gpu=gpu,
        model=dummy_weights,
        dims=dims,
        dtype=dtype,
        tp=(tp,),
        source="llmplan",
        extra={
            "num_layers": spec.num_hidden_layers,
            "peak_flops": peak,
            "mem_bw": bw,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
        },
    )
    write_profile(out, meta, rows)
    attn = measure_attention(
        dims, device=device, dtype=dtype, tp=tp, max_tokens=max_tokens,
        context=min(1024, 8 * max_tokens), repeats=repeats,
    )  # fmt: skip
    write_attention(out, attn)
    if as_json:
        print_json({"meta": meta.to_dict(), "rows": rows, "attention": attn})
        return
    from rich.table import Table

    t = Table(title=f"{dummy_weights} operators on {gpu} ({dtype}, TP {tp}), ms")
    ops = [k for k in rows[0] if k.startswith("time_stats.")]
    t.add_column("tokens", justify="right")
    for k in ops:
        t.add_column(k.split(".")[1], justify="right")
    for r in rows:
        t.add_row(str(r["num_tokens"]), *(f"{r[k]:.3f}" for k in ops))
    console.print(t)
    console.print(
        "attention (ms): "
        + ", ".join(
            f"{r['phase']} {r['num_tokens']}"
            + (f"x@{r['context']}" if r["phase"] == "decode" else "")
            + f" {r['time_ms']:.3f}"
            for r in attn
        )
    )
    console.print(
        f"device peaks measured: {peak / 1e12:.3f} TFLOP/s matmul, {bw / 1e9:.1f} GB/s copy  ->  wrote {out}/"
    )
