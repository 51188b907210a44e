"""``llmplan profile collect``: run the task suite through an OpenAI-compatible endpoint and record
the resources each request used (one CSV row per request, flushed as it completes)."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError
from llmplan.profile.sampler import Sampler, make_probe

COLUMNS = [
    "id",
    "task",
    "lang",
    "input_tokens",
    "output_tokens",
    "output_tokens_est",
    "latency_s",
    "max_util",
    "mean_util",
    "max_mem_mb",
    "mean_mem_mb",
    "n_samples",
    "sampler",
    "model",
    "repeat",
    "energy_j",  # joules over the request: NVML counter of --device (RAPL: CPU packages); empty if modelled
    "energy_source",  # nvml | rapl | modelled (no counter: energy is the model's only)
]


def make_meter() -> Any:
    """The energy meter ``collect`` reads around each request: NVML, else RAPL (``LLMPLAN_POWERCAP``
    or /sys/class/powercap), else none (``source == "modelled"``, with the reason in ``note``)."""
    import os

    from llmplan.energy.measure import POWERCAP, EnergyMeter

    return EnergyMeter(rapl_root=os.environ.get("LLMPLAN_POWERCAP") or POWERCAP)


def _joules(reading: dict[str, Any], device: int) -> float | str:
    by = reading["by_device"]
    if by is None:
        return ""
    j = by.get(f"gpu{device}", reading["joules"]) if reading["source"] == "nvml" else reading["joules"]
    return round(float(j), 4)


def load_suite(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The packaged suite (``llmplan/datasets/task_suite.jsonl``) or a JSONL of {id, task, lang, prompt}."""
    if path is None:
        text = resources.files("llmplan.datasets").joinpath("task_suite.jsonl").read_text(encoding="utf-8")
        src = "llmplan/datasets/task_suite.jsonl"
    else:
        from llmplan.validate import read_text

        p = Path(path)
        text = read_text(p, "task suite", "pass a JSONL of {id, task, lang, prompt} or omit the option")
        src = str(p)
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str):
                raise ValueError
        except (json.JSONDecodeError, ValueError, AttributeError):
            raise LlmplanError(
                f'{src}:{lineno}: expected {{"id", "task", "lang", "prompt"}}; fix that line'
            ) from None
        rows.append(row)
    return rows


def _default_model(client, base: str) -> str:
    r = client.get(f"{base}/v1/models")
    r.raise_for_status()
    data = r.json().get("data") or []
    if not data:
        raise LlmplanError(f"{base}/v1/models lists no models; pass --model NAME")
    return data[0]["id"]


def select_prompts(
    rows: list[dict[str, Any]], *, limit: int | None = None, shuffle: bool = True, seed: int = 0
) -> list[dict[str, Any]]:
    """The prompts a collection sends: shuffled first (seeded), then cut to ``limit``.

    Shuffling interleaves task types so slow drift on the machine (thermal, other tenants) does
    not masquerade as a task effect, and so ``limit`` samples every task rather than the first
    one in the file; the seed keeps runs comparable.
    """
    rows = list(rows)
    if shuffle:
        import random

        random.Random(seed).shuffle(rows)
    return rows[:limit]


def collect(
    endpoint: str,
    out: str | Path,
    *,
    model: str | None = None,
    suite: str | Path | None = None,
    max_tokens: int | None = None,
    sampler: str = "auto",
    pid: int | None = None,
    device: int = 0,
    interval_s: float = 0.05,
    repeat: int = 1,
    limit: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    timeout_s: float = 300.0,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    meter: Any = None,
) -> Path:
    """Send each suite prompt (``repeat`` times, sequentially so windows do not overlap) and write a CSV.

    ``max_tokens`` overrides every row's own budget (the suite carries one per prompt; 128 if absent).
    ``meter`` (default :func:`make_meter`) gives each row's joules from the energy counter's delta
    over the request (device-wide, like the nvml sampler); without a counter the row says "modelled".
    """
    import httpx

    from llmplan.predict.tokenize import count_tokens
    from llmplan.profile.features import detect_language, infer_task

    rows = select_prompts(load_suite(suite), limit=limit, shuffle=shuffle, seed=seed)
    base = endpoint.rstrip("/").removesuffix("/v1")
    probe = make_probe(sampler, pid, device)
    meter = meter if meter is not None else make_meter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_in = count_tokens([r["prompt"] for r in rows])
    with httpx.Client(timeout=timeout_s) as client, out.open("w", newline="", encoding="utf-8") as fh:
        try:
            name = model or _default_model(client, base)
        except httpx.HTTPError as exc:
            raise LlmplanError(
                f"cannot reach {base} ({exc}); start a server (`llmplan serve --dummy-weights "
                "llama-tiny`) or pass --endpoint URL"
            ) from None
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for rep in range(repeat):
            for row, ntok in zip(rows, n_in, strict=True):
                body = {
                    "model": name,
                    "messages": [{"role": "user", "content": row["prompt"]}],
                    "max_tokens": max_tokens if max_tokens is not None else int(row.get("max_tokens", 128)),
                    "temperature": 0.0,
                }
                with Sampler(probe, interval_s) as s:
                    meter.start()
                    t0 = time.perf_counter()
                    try:
                        r = client.post(f"{base}/v1/chat/completions", json=body)
                    except httpx.HTTPError as exc:
                        raise LlmplanError(
                            f"request {row.get('id')} to {base} failed ({exc}); rows so far are in {out}"
                        ) from None
                    latency = time.perf_counter() - t0
                    energy = meter.stop()
                if r.status_code != 200:
                    raise LlmplanError(
                        f"{base} answered {r.status_code} to request {row.get('id')}: "
                        f"{r.text[:200]!r}; rows so far are in {out}"
                    )
                usage = r.json().get("usage") or {}
                n_out = int(usage.get("completion_tokens") or 0)
                w = s.window()
                rec = {
                    "id": row.get("id", ""),
                    "task": row.get("task") or infer_task(row["prompt"]),
                    "lang": row.get("lang") or detect_language(row["prompt"]),
                    "input_tokens": ntok,
                    "output_tokens": n_out,
                    "output_tokens_est": n_out,
                    "latency_s": round(latency, 6),
                    "max_util": w.max_util,
                    "mean_util": round(w.mean_util, 3),
                    "max_mem_mb": round(w.max_mem_mb, 2),
                    "mean_mem_mb": round(w.mean_mem_mb, 2),
                    "n_samples": w.n_samples,
                    "sampler": probe.name,
                    "model": name,
                    "repeat": rep,
                    "energy_j": _joules(energy, device),
                    "energy_source": energy["source"],
                }
                writer.writerow(rec)
                fh.flush()
                if on_row:
                    on_row(rec)
    return out
