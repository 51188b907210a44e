"""Calibration profiles: a measured per-iteration cost, priced behind ``IterationCost``.

``llmplan calibrate`` times the real engine on shaped iterations (prefill chunks of several
sizes and contexts, decode batches of several sizes and contexts) and fits

    t = c0 + c_pt * prefill_tokens + c_pa * prefill_attn + c_ds * decode_seqs + c_dc * decode_ctx

over exactly the features of :class:`~llmplan.plan.costmodel.BatchShape`, so the simulator
prices a batch with a calibrated profile the same way it prices one with the roofline. The
fit is non-negative least squares on *relative* error (each row divided by its measured
time): short decode steps and long prefills count equally, which is what a median-error
fidelity target asks for. Pure numpy: loading a profile needs no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmplan.errors import LlmplanError
from llmplan.fileio import write_text_atomic
from llmplan.plan.costmodel import BatchShape

PROFILE_VERSION = 1
FEATURES = ("const", "prefill_tokens", "prefill_attn", "decode_seqs", "decode_ctx")


@dataclass(slots=True)
class Sample:
    """One measured iteration shape."""

    kind: str  # "prefill" | "decode" | "mixed"
    prefill_tokens: int
    prefill_attn: float
    decode_seqs: int
    decode_ctx: int
    time_s: float  # median over repeats
    label: str = ""

    @property
    def shape(self) -> BatchShape:
        return BatchShape(self.prefill_tokens, self.prefill_attn, self.decode_seqs, self.decode_ctx)


def features(shape: BatchShape) -> np.ndarray:
    return np.array(
        [1.0, shape.prefill_tokens, shape.prefill_attn, shape.decode_seqs, shape.decode_ctx], dtype=np.float64
    )


@dataclass(slots=True)
class CalibrationProfile:
    """A fitted cost; ``iteration_time`` makes it an :class:`~llmplan.plan.costmodel.IterationCost`."""

    coef: dict[str, float]
    model: str
    device: str
    dtype: str
    block_size: int = 16
    meta: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    version: int = PROFILE_VERSION

    def _vec(self) -> np.ndarray:
        return np.array([self.coef.get(f, 0.0) for f in FEATURES], dtype=np.float64)

    def iteration_time(self, shape: BatchShape) -> float:
        if not (shape.prefill_tokens or shape.decode_seqs):
            return 0.0
        c = self.coef
        return (
            c["const"]
            + c["prefill_tokens"] * shape.prefill_tokens
            + c["prefill_attn"] * shape.prefill_attn
            + c["decode_seqs"] * shape.decode_seqs
            + c["decode_ctx"] * shape.decode_ctx
        )

    def relative_errors(self, samples: Sequence[Sample] | None = None) -> list[float]:
        rows = self.samples if samples is None else samples
        return [abs(self.iteration_time(s.shape) - s.time_s) / s.time_s for s in rows]

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(FEATURES)
        return d

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(p, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "profile") -> CalibrationProfile:
        try:
            version = int(d.get("version", 0))
            if version != PROFILE_VERSION:
                raise LlmplanError(
                    f"{source}: profile version {version} is not supported (expected {PROFILE_VERSION}); "
                    "re-run `llmplan calibrate`"
                )
            if not isinstance(d.get("coef"), dict):
                raise LlmplanError(f"{source}: no `coef` object; re-run `llmplan calibrate`")
            missing = [f for f in FEATURES if f not in d["coef"]]
            if missing:
                raise LlmplanError(
                    f"{source} is not a calibration profile (coef lacks {', '.join(missing)}); "
                    "re-run `llmplan calibrate`"
                )
            coef = {}
            for f in FEATURES:
                v = d["coef"][f]
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise LlmplanError(f"{source}: coefficient {f} is {v!r}, not a number; re-run calibrate")
                coef[f] = float(v)
            bad = [f for f, v in coef.items() if not math.isfinite(v) or v < 0]
            if bad:
                raise LlmplanError(
                    f"{source}: coefficient {bad[0]} is negative or not finite; re-run calibrate"
                )
            if not any(coef.values()):
                raise LlmplanError(
                    f"{source}: every coef is 0 (each iteration would take 0 s); re-run `llmplan calibrate`"
                )
            samples = [Sample(**s) for s in d.get("samples", [])]
            return cls(
                coef=coef,
                model=str(d["model"]),
                device=str(d["device"]),
                dtype=str(d["dtype"]),
                block_size=int(d.get("block_size", 16)),
                meta=dict(d.get("meta", {})),
                samples=samples,
                version=version,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LlmplanError(
                f"{source} is not a calibration profile ({type(e).__name__}: {e}); "
                "write one with `llmplan calibrate --out FILE`"
            ) from e


def fit_profile(
    samples: Sequence[Sample], model: str, device: str, dtype: str, block_size: int = 16, **meta: Any
) -> CalibrationProfile:
    """Non-negative least squares on relative error over :data:`FEATURES`."""
    from scipy.optimize import nnls

    if len(samples) < len(FEATURES):
        raise LlmplanError(
            f"need at least {len(FEATURES)} measured shapes to fit a profile, got {len(samples)}"
        )
    x = np.stack([features(s.shape) for s in samples])
    y = np.array([s.time_s for s in samples], dtype=np.float64)
    if np.any(y <= 0):
        raise LlmplanError("a measured iteration took no time; the clock is broken or the shape is empty")
    # Scale columns to comparable magnitudes so NNLS is well conditioned, then undo.
    scale = np.maximum(np.abs(x).max(axis=0), 1e-12)
    w = 1.0 / y
    sol, _ = nnls((x / scale) * w[:, None], y * w)
    coef_vec = sol / scale
    prof = CalibrationProfile(
        coef={f: float(v) for f, v in zip(FEATURES, coef_vec, strict=True)},
        model=model,
        device=device,
        dtype=dtype,
        block_size=block_size,
        samples=list(samples),
        meta=dict(meta),
    )
    errs = np.array(prof.relative_errors())
    prof.meta["fit"] = {
        "median_rel_error": float(np.median(errs)),
        "p90_rel_error": float(np.quantile(errs, 0.9)),
        "max_rel_error": float(errs.max()),
        "num_samples": len(samples),
    }
    return prof


def load_profile(path: str | Path) -> CalibrationProfile:
    """Read a profile written by ``llmplan calibrate``; it is an ``IterationCost``."""
    p = Path(path)
    if not p.is_file():
        raise LlmplanError(f"calibration profile {p} not found; write one with `llmplan calibrate --out {p}`")
    from llmplan.validate import read_text

    text = read_text(p, "calibration profile", f"write one with `llmplan calibrate --out {p}`")
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise LlmplanError(
            f"calibration profile {p} is not valid JSON ({e}); re-run `llmplan calibrate`"
        ) from e
    if not isinstance(d, dict):
        raise LlmplanError(f"calibration profile {p} is not a JSON object; re-run `llmplan calibrate`")
    return CalibrationProfile.from_dict(d, source=str(p))


# The name the bench runner looks for.
load_calibration = load_profile
