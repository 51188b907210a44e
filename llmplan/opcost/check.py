"""Fidelity check: predict every row of a profile without reading its timings.

For each target profile (one GPU x model), the model is rebuilt from the *other* profiles only:

* ``lomo`` -- other models on the same GPU exist: efficiency curves are refitted on them and their
  measured tables (same GEMM shape, e.g. Llama-2-70B's projections for Llama-3-70B) are used
  where a shape matches;
* ``spec-sheet`` -- no other profile on this GPU: curves fitted on another GPU's profiles, priced
  with this GPU's spec-sheet peak and bandwidth (no table of this GPU is used);
* ``committed`` -- nothing else given: the committed fit (``fitted.json``), which may include the
  target's own data; the report says so.

Per-iteration rows are non-attention time (``layers x`` the layer's operators + embedding) at
prefill 128/512/2048 tokens and decode batch 1/8/32/128 (non-attention time does not depend on
the context; the published profiles have no attention timings, so attention is not checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.opcost.ops import MeasuredTables, OpModel, fitted_gpu_params, gemm_shapes
from llmplan.opcost.ops import small_op_bytes_per_token as _bpt
from llmplan.opcost.profiles import GEMM_OPS, ITER_OPS, PER_LAYER, SMALL_OPS, OpProfile, group_by_gpu

PREFILL_TOKENS = (128, 512, 2048)
DECODE_BATCHES = (1, 8, 32, 128)
# Decoder layers of the published profiles' models (the tables carry the dims, not the depth).
KNOWN_LAYERS = {
    "Llama-2-7b-hf": 32,
    "Llama-2-70b-hf": 80,
    "Meta-Llama-3-8B": 32,
    "Meta-Llama-3-70B": 80,
    "CodeLlama-34b-Instruct-hf": 48,
    "internlm-20b": 60,
    "Qwen-72B": 80,
    "phi-2": 32,
}


def num_layers(prof: OpProfile) -> int:
    n = prof.meta.extra.get("num_layers") or KNOWN_LAYERS.get(prof.meta.model)
    if not n:
        raise LlmplanError(
            f"profile {prof.meta.model} has no layer count; add extra.num_layers to profile.json"
        )
    return int(n)


def gpu_peaks(gpu_key: str, prof: OpProfile | None = None) -> tuple[float, float]:
    """(peak FLOP/s, memory bytes/s): the spec sheet's, else the peaks measured with the profile."""
    from llmplan.topology.specs import GPU_SPECS

    spec = GPU_SPECS.get(gpu_key)
    if spec is not None:
        return spec.bf16_tflops * 1e12, spec.hbm_gbps * 1e9
    ex = prof.meta.extra if prof is not None else {}
    if "peak_flops" in ex and "mem_bw" in ex:
        return float(ex["peak_flops"]), float(ex["mem_bw"])
    raise LlmplanError(
        f"no spec-sheet entry for device {gpu_key!r} and the profile carries no measured peaks; "
        "name a GPU of llmplan.topology.specs or re-measure with `llmplan calibrate --ops`"
    )


@dataclass(slots=True)
class CheckResult:
    model: str
    gpu: str
    mode: str
    fitted_on: str
    op_errors: dict[str, list[float]] = field(default_factory=dict)  # signed relative errors
    iterations: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        ops = {op: _stats(e) for op, e in self.op_errors.items() if e}
        it = [r["error"] for r in self.iterations]
        return {
            "model": self.model,
            "gpu": self.gpu,
            "mode": self.mode,
            "fitted_on": self.fitted_on,
            "ops": ops,
            "iteration": _stats(it),
            "iterations": self.iterations,
        }


def _stats(errs: Sequence[float]) -> dict[str, float]:
    a = np.abs(np.asarray(errs, dtype=float))
    if not len(a):
        return {"n": 0, "median": float("nan"), "p90": float("nan")}
    return {"n": int(len(a)), "median": float(np.median(a)), "p90": float(np.quantile(a, 0.9))}


def build_model_for(
    target: OpProfile, others: Sequence[OpProfile], *, use_tables: bool = True
) -> tuple[OpModel, str, str]:
    """The op model for ``target``'s GPU from ``others`` only: (model, mode, fitted_on)."""
    from llmplan.opcost.fit import fit_gpu

    gpu = target.meta.gpu
    peak, bw = gpu_peaks(gpu, target)
    by_gpu = group_by_gpu(p for p in others if p.meta.model != target.meta.model or p.meta.gpu != gpu)
    same = by_gpu.get(gpu, [])
    if same:
        peak, bw = gpu_peaks(gpu, same[0])
        params = fit_gpu(same, peak, bw, gpu)
        tables = MeasuredTables.from_profiles(same) if use_tables else None
        return OpModel.for_gpu(gpu, peak, bw, params=params, tables=tables), "lomo", params.fitted_on
    if by_gpu:
        ref = max(by_gpu, key=lambda g: len(by_gpu[g]))
        rpeak, rbw = gpu_peaks(ref, by_gpu[ref][0])
        params = fit_gpu(by_gpu[ref], rpeak, rbw, ref)
        return (
            OpModel.for_gpu(gpu, peak, bw, params=params),
            "spec-sheet",
            f"{ref}: {params.fitted_on}",
        )
    params, own = fitted_gpu_params(gpu)
    return (
        OpModel.for_gpu(gpu, peak, bw, params=params),
        "committed",
        "fitted.json (may include this profile)",
    )


def check_profile(target: OpProfile, model: OpModel, mode: str = "", fitted_on: str = "") -> CheckResult:
    """Signed relative error of every operator row and of the per-iteration sums."""
    dims = target.meta.dims
    res = CheckResult(target.meta.model, target.meta.gpu, mode, fitted_on)
    layers = num_layers(target)
    for tp in sorted(set(target.tp.tolist())):
        rows = target.rows(tp)
        shapes = gemm_shapes(dims, tp)
        bpt = _bpt(dims, tp)
        for op, arr in target.times.items():
            errs = res.op_errors.setdefault(op, [])
            for r in rows:
                meas = arr[r]
                if not np.isfinite(meas) or meas <= 0:
                    continue
                m = float(target.tokens[r])
                if op in GEMM_OPS:
                    pred = model.gemm_time(op, m, *shapes[op])
                elif op in SMALL_OPS or op in ITER_OPS:
                    pred = model.small_op_time(op, m, bpt[op])
                else:
                    continue
                errs.append(pred / meas - 1)
        for phase, n, ctx, atp, meas in target.attention:
            if atp != tp or meas <= 0:
                continue
            if phase == "prefill":
                pred = model.attention_time(dims, tp, n, n * (n + 1) / 2, 0, 0)
            else:
                pred = model.attention_time(dims, tp, 0, 0, n, n * ctx)
            res.op_errors.setdefault(f"attention_{phase}", []).append(pred / meas - 1)
        tok_index = {int(target.tokens[r]): r for r in rows}
        for phase, points in (("prefill", PREFILL_TOKENS), ("decode", DECODE_BATCHES)):
            for m in points:
                r = tok_index.get(m)
                if r is None:
                    continue
                meas_layer = sum(
                    PER_LAYER[op] * target.times[op][r] for op in GEMM_OPS + SMALL_OPS if op in target.times
                )
                meas = layers * meas_layer + target.times.get("emb", np.zeros(len(target.tokens)))[r]
                ops = model.layer_ops(dims, m, tp)
                pred_layer = sum(v for op, v in ops.items() if op in target.times)
                pred = layers * pred_layer + (
                    model.embedding_time(dims, m, tp) if "emb" in target.times else 0
                )
                res.iterations.append(
                    {
                        "tp": tp,
                        "phase": phase,
                        "tokens": m,
                        "measured_ms": meas * 1e3,
                        "predicted_ms": pred * 1e3,
                        "error": pred / meas - 1,
                    }
                )
    return res


def check_all(
    targets: Sequence[OpProfile], others: Sequence[OpProfile] = (), *, use_tables: bool = True
) -> list[CheckResult]:
    """Leave-one-out over ``targets`` (+ ``others``): each target priced without its own timings."""
    pool = list(targets) + [o for o in others if all(o.path != t.path for t in targets)]
    out = []
    for t in targets:
        rest = [p for p in pool if p is not t]
        model, mode, fitted_on = build_model_for(t, rest, use_tables=use_tables)
        out.append(check_profile(t, model, mode, fitted_on))
    return out


def pooled(results: Sequence[CheckResult]) -> dict[str, Any]:
    """Median / p90 absolute error over all results, per op and per iteration."""
    ops: dict[str, list[float]] = {}
    it: list[float] = []
    for r in results:
        for op, e in r.op_errors.items():
            ops.setdefault(op, []).extend(e)
        it.extend(x["error"] for x in r.iterations)
    return {"ops": {op: _stats(e) for op, e in ops.items()}, "iteration": _stats(it)}


def check_spec_only(targets: Sequence[OpProfile], reference: Sequence[OpProfile]) -> list[CheckResult]:
    """Targets on a GPU without profiles: curves fitted on ``reference`` + the target GPU spec sheet."""
    out = []
    for t in targets:
        ref = [p for p in reference if p.meta.gpu != t.meta.gpu]
        if not ref:
            raise LlmplanError("spec-sheet check needs reference profiles of another GPU")
        model, mode, fitted_on = build_model_for(t, ref)
        out.append(check_profile(t, model, mode, fitted_on))
    return out
