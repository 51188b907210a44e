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
    """The trace file as a frame; a file that does not parse is refused naming ``path:line``."""
    import re

    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv", ".txt", ""):
        raise LlmplanError(f"{path}: unsupported extension {suffix!r}; use .csv or .jsonl")
    if path.is_dir():
        raise LlmplanError(f"trace file {path} is a directory; pass the path of a CSV or JSONL file")
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    try:
        return pd.read_csv(path)
    except UnicodeDecodeError as exc:
        raise LlmplanError(
            f"{path}: not UTF-8 text (byte {exc.start}; a binary file?); pass a CSV with "
            "TIMESTAMP,ContextTokens,GeneratedTokens"
        ) from None
    except (ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", first)
        if m:
            raise LlmplanError(
                f"{path}:{m.group(2)}: {m.group(3)} fields where the header has {m.group(1)}; "
                "fix or delete that row"
            ) from None
        raise LlmplanError(f"{path}: cannot parse as CSV ({first[:200]})") from None


def _read_jsonl(path: Path) -> pd.DataFrame:
    import json

    from llmplan.validate import read_text

    text = read_text(path, "trace file", "pass a JSONL file with one JSON object per line")
    rows: list[dict] = []
    lines: list[int] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmplanError(f"{path}:{n}: not valid JSON ({exc.msg}); fix or delete that line") from None
        if not isinstance(row, dict):
            raise LlmplanError(f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}")
        rows.append(row)
        lines.append(n)
    df = pd.DataFrame.from_records(rows)
    df.attrs["lines"] = lines
    return df


def _column(df: pd.DataFrame, key: str, path: Path) -> str:
    for name in _ALIASES[key]:
        if name in df.columns:
            return name
    raise LlmplanError(
        f"{path}: no {key} column; expected one of {', '.join(_ALIASES[key])} "
        f"(found {', '.join(map(str, df.columns))})"
    )


def trace_columns(
    path: Path, min_output: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str | None] | None]:
    """Arrival seconds (relative to the first request), prompt and output tokens, prompts.
    ``min_output``: the smallest output token count accepted (a replay needs >= 1)."""
    df = read_trace_frame(path)
    if df.empty:
        raise LlmplanError(f"{path}: the trace has no rows")
    ac = _column(df, "arrival", path)
    arrival = _arrival_seconds(df, ac, path)
    tok = [
        _token_column(df, _column(df, key, path), path, lo=0 if key == "prompt_tokens" else min_output)
        for key in ("prompt_tokens", "output_tokens")
    ]
    arrival = arrival - arrival.min()
    prompts = (
        df["prompt"].astype(object).where(df["prompt"].notna(), None).tolist() if "prompt" in df else None
    )
    return arrival, tok[0], tok[1], prompts


def resolve_trace_path(trace: str | Path) -> Path:
    """``trace`` as given, else relative to ``$LLMPLAN_DATA_DIR``; refused when neither exists."""
    import os

    p = Path(trace)
    if not p.exists() and os.environ.get("LLMPLAN_DATA_DIR"):
        p = Path(os.environ["LLMPLAN_DATA_DIR"]) / trace
    if not p.exists():
        raise LlmplanError(f"trace {str(trace)!r} does not exist; pass a CSV path (or set LLMPLAN_DATA_DIR)")
    return p


def azure_lengths(path: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """Prompt and output token counts of an Azure-schema trace's usable rows, and its request rate.

    The file must have ``TIMESTAMP,ContextTokens,GeneratedTokens``. Bad rows (text, negative,
    fractional, huge counts) are refused as FILE:LINE; zero-length requests are valid trace rows
    that a length model has nothing to size for, so they are dropped. The rate is (rows - 1) over
    the arrival span of the rows kept (None when they all arrive at once).
    """
    need = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"}
    have = set(read_trace_frame(path).columns)
    if not need <= have:
        raise LlmplanError(
            f"trace {str(path)!r} lacks columns {sorted(need - have)}; "
            "expected TIMESTAMP,ContextTokens,GeneratedTokens"
        )
    arrival, prompt_tokens, output_tokens, _ = trace_columns(path, min_output=0)
    keep = (prompt_tokens > 0) & (output_tokens > 0)
    if keep.sum() < 2:
        raise LlmplanError(f"trace {str(path)!r} has fewer than 2 usable requests")
    span = float(arrival[keep].max() - arrival[keep].min())
    rate = (int(keep.sum()) - 1) / span if span > 0 else None
    return prompt_tokens[keep], output_tokens[keep], rate


def _line(df: pd.DataFrame | pd.Series, i: int) -> int:
    """File line of frame row ``i``: JSONL records keep their line numbers in ``attrs``; a CSV has a
    header line, then one row per line."""
    lines = df.attrs.get("lines")
    return int(lines[int(i)]) if lines else int(i) + 2


def _arrival_seconds(df: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    """Arrival times in seconds: numbers, or ISO-8601 datetimes (relative to the earliest).
    The first unusable cell is refused as ``path:line``."""
    col = df[name]
    if not pd.api.types.is_numeric_dtype(col):
        ts = pd.to_datetime(col, format="ISO8601", utc=True, errors="coerce")
        bad = np.flatnonzero(ts.isna().to_numpy())
        if not len(bad):
            return (ts - ts.min()).dt.total_seconds().to_numpy()
        numeric = pd.to_numeric(col, errors="coerce")
        if numeric.notna().sum() <= len(col) - len(bad):  # mostly datetimes: name the first bad one
            raise LlmplanError(
                f"{path}:{_line(df, bad[0])}: {name} is {_cell(col, bad[0])}; write seconds or an ISO-8601 "
                "datetime such as 2023-11-16 18:15:46"
            )
    else:
        numeric = col
    arrival = numeric.to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arrival))
    if len(bad):
        raise LlmplanError(
            f"{path}:{_line(df, bad[0])}: {name} is {_cell(col, bad[0])}; every request needs a finite "
            "arrival time in seconds (or an ISO-8601 datetime)"
        )
    return arrival


def _token_column(df: pd.DataFrame, name: str, path: Path, lo: int) -> np.ndarray:
    """Whole token counts in [lo, 2**40]; anything else (text, blank, 10.5, -5, 1e30, a number that
    would wrap int64) is refused as ``path:line``, never cast into a wrong count."""
    from llmplan.validate import MAX_COUNT

    raw = df[name]
    kind = "output" if name in _ALIASES["output_tokens"] else "prompt"
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(
            ~np.isfinite(values) | (values != np.round(values)) | (values < lo) | (values > MAX_COUNT)
        )
    if len(bad):
        raise LlmplanError(
            f"{path}:{_line(df, bad[0])}: {name} is {_cell(raw, bad[0])}; {kind} token counts must be "
            f">= {lo} (whole numbers, at most {MAX_COUNT}) ({len(bad)} such row(s); fix or delete them)"
        )
    return values.astype(np.int64)


def _cell(col: pd.Series, i: int) -> str:
    v = col.iloc[int(i)]
    if isinstance(v, float | np.floating) and np.isnan(v):
        return "empty"
    text = repr(v.item() if isinstance(v, np.generic) else v)
    return text if len(text) <= 40 else text[:37] + "..."
