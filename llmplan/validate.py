"""Checks at the edge: numbers from options and files, and text files, refused in one line.

Every helper raises :class:`~llmplan.errors.LlmplanError` with a message that names the value (an
option such as ``--a1`` or a file field such as ``t.json: GPU0.memory_gib``), what was wrong
with it, and what to pass instead. The CLI prints that line and exits 2. Library code that reads
user files (topologies, plans, calibration profiles, traces) uses the same helpers, so the
messages read alike whatever the command.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

# Token counts, batch sizes and the like above this are refused rather than overflowing int64 or
# allocating without bound: 2**40 tokens is far beyond any model's context or any trace's request.
MAX_COUNT = 1 << 40


def _range_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '<='} {hi:g}"
    return "finite"


def number(
    value: Any,
    name: str,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    fix: str = "",
) -> float:
    """``value`` as a finite float within the bounds, else one line naming ``name``.

    ``lo_open``/``hi_open`` make a bound exclusive (``lo=0, lo_open=True``: strictly positive).
    Booleans are not numbers here (JSON ``true`` is not 1 GiB).
    """
    want = _range_text(lo, hi, lo_open, hi_open)
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LlmplanError(f"{name} must be a number {want} (got {value!r}){tail}")
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise LlmplanError(f"{name} must be a number {want} (got {value!r}){tail}") from None
    bad = not math.isfinite(x)
    if lo is not None and (x <= lo if lo_open else x < lo):
        bad = True
    if hi is not None and (x >= hi if hi_open else x > hi):
        bad = True
    if bad:
        raise LlmplanError(f"{name} must be a finite number {want} (got {value!r}){tail}")
    return x


def positive(value: Any, name: str, *, fix: str = "") -> float:
    """A finite number > 0."""
    return number(value, name, lo=0.0, lo_open=True, fix=fix)


def integer(
    value: Any, name: str, *, lo: int | None = None, hi: int | None = MAX_COUNT, fix: str = ""
) -> int:
    """``value`` as an int within [lo, hi]: whole floats (``4.0``) pass, ``4.5``, text and bools don't."""
    want = _range_text(lo, hi, False, False)
    tail = f"; {fix}" if fix else ""
    if isinstance(value, bool):
        raise LlmplanError(f"{name} must be a whole number {want} (got {value!r}){tail}")
    if isinstance(value, int):
        n = value
    else:
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            raise LlmplanError(f"{name} must be a whole number {want} (got {value!r}){tail}") from None
        if not math.isfinite(x) or x != int(x):
            raise LlmplanError(f"{name} must be a whole number {want} (got {value!r}){tail}")
        n = int(x)
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise LlmplanError(f"{name} must be a whole number {want} (got {value!r}){tail}")
    return n


def available_memory_bytes() -> int:
    """Memory this process can still use (MemAvailable; psutil where /proc is absent)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - no way to tell: do not refuse
        return 1 << 62


def check_fits_memory(count: int, bytes_each: int, what: str, fix: str) -> None:
    """Refuse ``count`` items of ``bytes_each`` when they need more than half the available memory."""
    need = count * bytes_each
    have = available_memory_bytes()
    if need > have // 2:
        raise LlmplanError(f"{what} needs about {_gib(need)} of memory but {_gib(have)} is available; {fix}")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):,.1f} GiB" if n >= 1 << 28 else f"{n / (1 << 20):,.0f} MiB"


def read_text(path: str | Path, what: str, fix: str) -> str:
    """A UTF-8 text file's content, or one line: ``{what} {path} does not exist|is a directory|is not
    UTF-8 text ...; {fix}``."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise LlmplanError(f"{what} {p} is a directory, not a file; {fix}")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise LlmplanError(f"{what} {p} does not exist; {fix}") from None
    except OSError as exc:
        raise LlmplanError(f"{what} {p} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LlmplanError(
            f"{what} {p} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}; a binary "
            f"file?); {fix}"
        ) from None


def read_json(path: str | Path, what: str, fix: str) -> Any:
    """A JSON file's document (NaN/Infinity literals refused), or one line naming the file and line."""
    text = read_text(path, what, fix)

    def _no_constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise LlmplanError(
            f"{what} {Path(path)} is not valid JSON (line {exc.lineno}: {exc.msg}); {fix}"
        ) from None
    except ValueError as exc:
        raise LlmplanError(f"{what} {Path(path)}: {exc}; {fix}") from None


def mapping(value: Any, name: str, fix: str = "") -> dict[str, Any]:
    if not isinstance(value, dict):
        tail = f"; {fix}" if fix else ""
        raise LlmplanError(f"{name} must be a mapping/object (got {type(value).__name__}){tail}")
    return value


def sequence(value: Any, name: str, fix: str = "") -> list[Any]:
    if not isinstance(value, list):
        tail = f"; {fix}" if fix else ""
        raise LlmplanError(f"{name} must be a list (got {type(value).__name__}){tail}")
    return value


__all__ = [
    "MAX_COUNT",
    "available_memory_bytes",
    "check_fits_memory",
    "integer",
    "mapping",
    "number",
    "positive",
    "read_json",
    "read_text",
    "sequence",
]
