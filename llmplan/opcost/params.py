"""The fitted parameter table of the operator cost model (``fitted.json`` beside this file).

``benchmarks/fit_costmodel.py`` rewrites it from the profiles in
``$LLMPLAN_DATA_DIR/../gpu-profiles/vidur-2024``; only the few fitted numbers are committed.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FITTED_PATH = Path(__file__).with_name("fitted.json")


@cache
def fitted() -> dict[str, Any]:
    """The committed fitted parameters (read once)."""
    return json.loads(FITTED_PATH.read_text())
