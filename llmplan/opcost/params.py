"""The fitted parameter table of the operator cost model (``fitted.json`` beside this file).

``benchmarks/fit_costmodel.py`` rewrites it from the profiles in
``$LLMPLAN_DATA_DIR/../gpu-profiles/vidur-2024``; only the few fitted numbers are committed.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from llmplan.errors import LlmplanError

FITTED_PATH = Path(__file__).with_name("fitted.json")
PARAMS_ENV = "LLMPLAN_OPCOST_PARAMS"


@cache
def fitted() -> dict[str, Any]:
    """The fitted parameters: ``$LLMPLAN_OPCOST_PARAMS`` (written by ``llmplan calibrate --profiles DIR
    --out FILE``) when set, else the committed table. Read once per process."""
    path = Path(os.environ.get(PARAMS_ENV) or FITTED_PATH)
    try:
        d = json.loads(path.read_text())
        if not {"gpus", "collectives", "reference_gpu"} <= set(d):
            raise ValueError("missing gpus/collectives/reference_gpu")
        return d
    except (OSError, ValueError) as e:
        raise LlmplanError(
            f"{PARAMS_ENV}={path} is not a cost-model parameter file ({e}); "
            "write one with `llmplan calibrate --profiles DIR --out FILE` or unset it"
        ) from None
