"""The stage map of a multi-worker instance: which contiguous layer range each worker holds.

Pure (no torch): the CLI validates ``--layer-split`` with it before anything starts, the live
executor and the scripted migration run (:mod:`llmplan.runtime.workers.scripted`) both move
layers with :func:`apply_move`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

Ranges = list[tuple[int, int]]


@dataclass(slots=True)
class MigrationRecord:
    """One executed layer migration, its measured time beside the estimate ``S/B + T_sync``."""

    step: int
    layers: tuple[int, ...]
    src: int
    dst: int
    bytes: int
    measured_s: float
    estimate_s: float
    link_bytes_per_s: float
    sync_s: float
    trigger: str = "scripted"  # scripted | admin | controller

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "layers": list(self.layers), "src": self.src, "dst": self.dst,
            "bytes": self.bytes, "measured_s": self.measured_s, "estimate_s": self.estimate_s,
            "link_bytes_per_s": self.link_bytes_per_s, "sync_s": self.sync_s, "trigger": self.trigger,
        }


@dataclass(slots=True)
class OffloadRecord:
    """One executed attention migration: the last ``kv_heads`` KV heads of each of ``layers``
    (with their query groups and KV in use) from worker ``src`` to ``dst``."""

    step: int
    layers: tuple[int, ...]
    src: int
    dst: int
    kv_heads: int
    bytes: int
    measured_s: float
    estimate_s: float
    trigger: str = "admin"  # admin | controller

    def as_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "layers": list(self.layers), "src": self.src, "dst": self.dst,
            "kv_heads": self.kv_heads, "bytes": self.bytes, "measured_s": self.measured_s,
            "estimate_s": self.estimate_s, "trigger": self.trigger,
        }


def validate_ranges(ranges: Sequence[tuple[int, int]], num_layers: int) -> None:
    if not ranges or ranges[0][0] != 0 or ranges[-1][1] != num_layers:
        raise LlmplanError(f"stage ranges {list(ranges)} must cover layers 0..{num_layers} in order")
    for (a, b), (c, _) in zip(ranges, ranges[1:], strict=False):
        if not a < b == c:
            raise LlmplanError(f"stage ranges {list(ranges)} must be contiguous and non-empty")
    if ranges[-1][0] >= ranges[-1][1]:
        raise LlmplanError(f"stage ranges {list(ranges)} must be non-empty")


def ranges_from_counts(counts: Sequence[int]) -> Ranges:
    out: Ranges = []
    start = 0
    for n in counts:
        out.append((start, start + n))
        start += n
    return out


def even_split(num_layers: int, workers: int) -> list[int]:
    """Layers per worker, the remainder going to the later stages (rank 0 also runs the head)."""
    base, extra = divmod(num_layers, workers)
    return [base + (1 if r >= workers - extra else 0) for r in range(workers)]


def parse_layer_split(text: str) -> list[int]:
    try:
        counts = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise LlmplanError(f"--layer-split {text!r} is not a list of integers; write e.g. 2,2") from None
    if not counts:
        raise LlmplanError("--layer-split is empty; write the layers of each worker, e.g. 2,2")
    return counts


def _plan_stage_counts(plan: Any) -> list[int] | None:
    """Layers per pipeline stage of a plan (instance 0), or None when the plan names no stages."""
    if plan is None:
        return None
    if not isinstance(plan, dict):
        path = Path(plan)
        if not path.is_file():
            raise LlmplanError(f"plan file {path} not found; write one with `llmplan plan --out plan.json`")
        if path.suffix in (".yaml", ".yml"):
            import yaml

            try:
                plan = yaml.safe_load(_read_plan_text(path))
            except yaml.YAMLError as e:
                raise LlmplanError(f"plan file {path} is not valid YAML ({type(e).__name__})") from None
        else:
            try:
                plan = json.loads(_read_plan_text(path))
            except ValueError as e:
                raise LlmplanError(f"plan file {path} is not valid JSON ({e})") from e
    if not isinstance(plan, dict):
        return None
    stages = None
    if isinstance(plan.get("instances"), list) and plan["instances"]:
        stages = plan["instances"][0].get("stages")
    elif isinstance(plan.get("stages"), list):
        stages = plan["stages"]
    else:
        for key in ("placement", "plan"):
            if isinstance(plan.get(key), dict):
                return _plan_stage_counts(plan[key])
    if not stages:
        return None
    counts = []
    for st in stages:
        if "layers" in st:
            lo, hi = st["layers"][0], st["layers"][1]
        else:
            lo, hi = st["layer_start"], st["layer_end"]
        counts.append(int(hi) - int(lo))
    return counts


def resolve_split(num_layers: int, workers: int, layer_split: str | Sequence[int] | None = None,
                  plan: Any = None) -> Ranges:
    """Stage ranges for ``workers`` workers: ``--layer-split``, else the plan's stages when it has
    as many, else an even split. Errors name the problem and the fix."""
    if workers < 1:
        raise LlmplanError(f"--workers must be >= 1 (got {workers})")
    if workers > num_layers:
        raise LlmplanError(
            f"--workers {workers} exceeds the model's {num_layers} layers; each worker needs at least one"
        )
    if layer_split is not None:
        counts = parse_layer_split(layer_split) if isinstance(layer_split, str) else list(layer_split)
        if len(counts) != workers:
            raise LlmplanError(
                f"--layer-split names {len(counts)} worker(s) but --workers is {workers}; give one count each"
            )
        if any(n < 1 for n in counts):
            raise LlmplanError(f"--layer-split {counts}: every worker needs at least one layer")
        if sum(counts) != num_layers:
            raise LlmplanError(
                f"--layer-split {','.join(map(str, counts))} sums to {sum(counts)} but the model has "
                f"{num_layers} layers; make the counts add up to {num_layers}"
            )
        return ranges_from_counts(counts)
    counts = _plan_stage_counts(plan)
    if counts is not None and len(counts) == workers and sum(counts) == num_layers and min(counts) > 0:
        return ranges_from_counts(counts)
    return ranges_from_counts(even_split(num_layers, workers))


def apply_move(ranges: Sequence[tuple[int, int]], layers: Sequence[int], src: int, dst: int) -> Ranges:
    """The stage map after moving ``layers`` from stage ``src`` to the adjacent stage ``dst``."""
    if not (0 <= src < len(ranges) and 0 <= dst < len(ranges)):
        raise LlmplanError(f"workers are 0..{len(ranges) - 1}; {src}->{dst} names one that does not exist")
    if abs(src - dst) != 1:
        raise LlmplanError(f"layer migration moves boundary layers between adjacent stages, not {src}->{dst}")
    lo, hi = ranges[src]
    k = len(layers)
    if k == 0 or k >= hi - lo:
        raise LlmplanError(f"stage {src} holds layers [{lo}, {hi}); cannot move {k} and keep one")
    expect = tuple(range(hi - k, hi)) if dst == src + 1 else tuple(range(lo, lo + k))
    if tuple(layers) != expect:
        raise LlmplanError(
            f"only boundary layers {list(expect)} of stage {src} can move to stage {dst}, not {list(layers)}"
        )
    out = list(ranges)
    if dst == src + 1:
        out[src], out[dst] = (lo, hi - k), (hi - k, ranges[dst][1])
    else:
        out[src], out[dst] = (lo + k, hi), (ranges[dst][0], lo + k)
    return out


def _read_plan_text(path: Path) -> str:
    """The plan file's text; a binary, unreadable or non-UTF-8 file is refused in one line."""
    from llmplan.validate import read_text

    return read_text(path, "plan file", "write one with `llmplan plan --out plan.json`")
