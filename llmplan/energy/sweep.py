"""A locked-clock sweep (``llmplan calibrate --ops --device cuda --clock-sweep MHZ,...``) and the
fit of its samples (``llmplan calibrate --power-samples FILE``).

For each clock: lock the SM clock through NVML, run the work (the operator timings), read the
GPU's energy counter before and after, unlock. Each clock gives one :class:`PowerSample`-shaped
JSON line (``mhz`` = the SM clock NVML reports at the end, ``activity`` = NVML utilisation,
``power_w`` = joules / seconds) that :func:`llmplan.energy.measure.load_power_samples` and
:func:`llmplan.energy.power.fit_power` read. The clocks go back to the driver whatever happens.
This path has **not run on a GPU** in this project (no GPU here); on CPU, without NVML or without
permission to lock, it is refused in one line before anything is timed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError


def parse_clocks(text: str) -> list[float]:
    """``"900,1200,1410"`` -> MHz values; one-line error otherwise."""
    try:
        mhz = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        mhz = []
    if len(mhz) < 2 or any(not 100 <= m <= 5000 for m in mhz) or len(set(mhz)) < 2:
        raise LlmplanError(
            f"--clock-sweep {text!r}: give two or more distinct SM clocks in MHz, "
            "e.g. --clock-sweep 900,1200,1410"
        )
    return mhz


def open_sweep(device: str, reader: Any = None) -> tuple[Any, int]:
    """The NVML reader and GPU index for a sweep on ``device``; refuses (one line) on CPU or
    without NVML. ``reader`` defaults to a fresh :class:`llmplan.energy.measure.NvmlReader`."""
    if not device.startswith("cuda"):
        raise LlmplanError(
            f"--clock-sweep needs --device cuda (it locks a GPU's SM clock through NVML); --device {device} "
            "has no clock to lock: drop --clock-sweep, or fit recorded samples with --power-samples FILE"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    if reader is None:
        from llmplan.energy.measure import NvmlReader

        reader = NvmlReader()
    if not reader.available:
        raise LlmplanError(f"--clock-sweep: cannot lock clocks: {reader.problem}; drop --clock-sweep")
    if index >= len(reader.handles):
        raise LlmplanError(f"--clock-sweep: NVML sees {len(reader.handles)} GPU(s), no GPU {index}")
    return reader, index


def run_sweep(reader: Any, index: int, clocks: list[float], work: Callable[[], Any]) -> list[dict[str, Any]]:
    """Lock each clock, run ``work``, read energy; unlock at the end (also on error or refusal).
    A refused lock raises :class:`LlmplanError` (one line) before any work at that clock."""
    out: list[dict[str, Any]] = []
    try:
        for mhz in clocks:
            ok, msg = reader.set_locked_clocks(mhz, index)
            if not ok:
                raise LlmplanError(f"--clock-sweep refused: {msg}")
            a = reader.read()[index]
            if a.energy_mj is None:
                raise LlmplanError(f"--clock-sweep: GPU{index} has no energy counter (needs Volta or newer)")
            t0 = time.monotonic()
            work()
            dt = time.monotonic() - t0
            b = reader.read()[index]
            joules = (b.energy_mj - a.energy_mj) / 1000.0  # type: ignore[operator]
            out.append({
                "mhz": b.sm_mhz or mhz, "requested_mhz": mhz, "activity": b.util,
                "power_w": joules / dt if dt > 0 else 0.0, "joules": joules, "seconds": dt,
                "source": "nvml",
            })
    finally:
        reader.set_locked_clocks(None, index)
    return out


def write_samples(path: Path, samples: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(s) + "\n" for s in samples))


def fit_samples_file(path: Path, gpu: str) -> dict[str, Any]:
    """Fit ``gpu``'s clock power model to a samples file: the fitted and the prior parameters."""
    from llmplan.energy.measure import load_power_samples
    from llmplan.energy.power import clock_power_for, fit_power

    base = clock_power_for(gpu)
    samples = load_power_samples(path)
    fitted, rms = fit_power(base, samples)
    keys = ("static_w", "dyn_w", "alpha", "idle_w", "f_max_mhz")
    return {
        "gpu": gpu, "samples": len(samples), "rms_w": rms,
        "clocks_mhz": sorted({round(s.mhz) for s in samples}),
        "prior": {k: getattr(base, k) for k in keys}, "fitted": {k: getattr(fitted, k) for k in keys},
        "source": fitted.source,
    }


def sweep_ops(
    out: Path, dummy_weights: str, device: str, dtype: str, tp: int, max_tokens: int,
    repeats: int, reader: Any, index: int, clocks: list[float],
) -> tuple[Path, list[dict[str, Any]]]:
    """``calibrate --ops --clock-sweep``: the operator timings once per locked clock; the samples
    go to ``out/power_samples.jsonl`` (read by ``calibrate --power-samples``)."""
    from llmplan.models import get_model_spec
    from llmplan.opcost.measure import DEFAULT_TOKENS, measure_ops
    from llmplan.opcost.profiles import ModelDims

    dims = ModelDims.from_spec(get_model_spec(dummy_weights))
    tokens = [t for t in DEFAULT_TOKENS if t <= max_tokens] or [1]

    def work() -> None:
        import torch

        measure_ops(dims, device=device, dtype=dtype, tp=tp, tokens=tokens, repeats=repeats)
        torch.cuda.synchronize()

    samples = run_sweep(reader, index, clocks, work)
    path = out / "power_samples.jsonl"
    write_samples(path, samples)
    return path, samples
