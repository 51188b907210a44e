"""Trace files: the Azure LLM inference traces (2023, 2024) and user files in that schema.

Schema: ``TIMESTAMP`` (datetime, or seconds as a number), ``ContextTokens``,
``GeneratedTokens``. User files may instead use llmplan's own names ``arrival_s``,
``prompt_tokens``, ``output_tokens`` and an optional ``prompt`` column; CSV or JSONL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llmplan.errors import LlmplanError

_ALIASES = {
    "arrival": ("arrival_s", "TIMESTAMP", "timestamp"),
    "prompt_tokens": ("prompt_tokens", "ContextTokens", "context_tokens", "input_tokens"),
    "output_tokens": ("output_tokens", "GeneratedTokens", "generated_tokens"),
}


def read_trace_frame(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True)
        if suffix in (".csv", ".txt", ""):
            return pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise LlmplanError(f"{path}: cannot parse as {suffix or 'CSV'} ({str(exc).splitlines()[0]})") from exc
    raise LlmplanError(f"{path}: unsupported extension {suffix!r}; use .csv or .jsonl")


def _column(df: pd.DataFrame, key: str, path: Path) -> str:
    for name in _ALIASES[key]:
        if name in df.columns:
            return name
    raise LlmplanError(
        f"{path}: no {key} column; expected one of {', '.join(_ALIASES[key])} "
        f"(found {', '.join(map(str, df.columns))})"
    )


def trace_columns(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None] | None]:
    """Arrival seconds (relative to the first request), prompt and output tokens, prompts."""
    df = read_trace_frame(path)
    if df.empty:
        raise LlmplanError(f"{path}: the trace has no rows")
    ac = _column(df, "arrival", path)
    col = df[ac]
    if pd.api.types.is_numeric_dtype(col):
        arrival = col.to_numpy(dtype=np.float64)
    else:
        try:
            ts = pd.to_datetime(col, format="ISO8601", utc=True)
        except (ValueError, TypeError) as exc:
            raise LlmplanError(
                f"{path}: column {ac} is neither seconds nor ISO-8601 datetimes ({str(exc).splitlines()[0]})"
            ) from exc
        arrival = (ts - ts.min()).dt.total_seconds().to_numpy()
    if np.isnan(arrival).any():
        row = int(np.flatnonzero(np.isnan(arrival))[0]) + 2
        raise LlmplanError(f"{path}: empty {ac} at line {row}; every request needs an arrival time")
    tok = []
    for key in ("prompt_tokens", "output_tokens"):
        name = _column(df, key, path)
        values = pd.to_numeric(df[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values) | (values != np.round(values)))
        if len(bad):
            raise LlmplanError(
                f"{path}: column {name} line {int(bad[0]) + 2} is {df[name].iloc[bad[0]]!r}; token counts "
                "must be whole numbers"
            )
        tok.append(values.astype(np.int64))
    arrival = arrival - arrival.min()
    prompts = (
        df["prompt"].astype(object).where(df["prompt"].notna(), None).tolist() if "prompt" in df else None
    )
    return arrival, tok[0], tok[1], prompts
