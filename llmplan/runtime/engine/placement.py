"""Device placement of layers from a ``--plan`` file (HELR device map / pipeline stages).

Accepted JSON shapes (the planner's output, or written by hand):

* ``{"stages": [{"device": "cuda:0", "layers": [0, 16]}, {"device": "cuda:1", "layers": [16, 32]}]}``
  (layer ranges half-open; ``"layer_start"``/``"layer_end"`` keys work too);
* ``{"device_map": {"0": "cuda:0", "1": "cuda:0", ...}}`` (layer index -> device), or a list;
* a plan whose ``"placement"`` or ``"plan"`` field holds one of the above.

Without a plan every layer goes on the one ``--device``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from llmplan.errors import LlmplanError


def _check_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise LlmplanError(f"plan names an invalid device {name!r}; use e.g. cpu, cuda:0") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LlmplanError(f"plan places layers on {name} but CUDA is not available; pass --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LlmplanError(
                f"plan places layers on {name} but only {torch.cuda.device_count()} GPU(s) exist"
            )
    return dev


def _from_stages(stages: list[dict[str, Any]], num_layers: int) -> list[torch.device]:
    out: list[torch.device | None] = [None] * num_layers
    for st in stages:
        dev = st.get("device") or (st.get("devices") or [None])[0]
        if dev is None:
            raise LlmplanError('a plan stage has no \'device\'; give each stage e.g. "device": "cuda:0"')
        if "layers" in st:
            rng = st["layers"]
            start, end = (rng[0], rng[1]) if isinstance(rng, list | tuple) else (rng["start"], rng["end"])
        else:
            start, end = st["layer_start"], st["layer_end"]
        if not 0 <= start < end <= num_layers:
            raise LlmplanError(
                f"plan stage layers [{start}, {end}) lie outside the model's {num_layers} layers"
            )
        for i in range(start, end):
            if out[i] is not None:
                raise LlmplanError(f"plan places layer {i} twice; stage layer ranges must not overlap")
            out[i] = _check_device(str(dev))
    missing = [i for i, d in enumerate(out) if d is None]
    if missing:
        raise LlmplanError(
            f"plan leaves {len(missing)} layer(s) unplaced (first: {missing[0]}); cover every layer"
        )
    return out  # type: ignore[return-value]


def layer_devices_from_plan(
    plan: dict[str, Any] | str | Path | None, num_layers: int, device: str
) -> list[torch.device]:
    if plan is None:
        return [_check_device(device)] * num_layers
    if not isinstance(plan, dict):
        path = Path(plan)
        if not path.is_file():
            raise LlmplanError(
                f"plan file {path} not found; write one with `llmplan plan ... --json > plan.json`"
            )
        try:
            plan = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise LlmplanError(f"plan file {path} is not valid JSON ({e})") from e
    assert isinstance(plan, dict)
    for key in ("placement", "plan"):
        if isinstance(plan.get(key), dict):
            return layer_devices_from_plan(plan[key], num_layers, device)
    if "stages" in plan:
        return _from_stages(list(plan["stages"]), num_layers)
    if "device_map" in plan:
        dm = plan["device_map"]
        items = dm.items() if isinstance(dm, dict) else enumerate(dm)
        stages = [
            {"device": d, "layers": [int(str(k).rsplit(".", 1)[-1]), int(str(k).rsplit(".", 1)[-1]) + 1]}
            for k, d in items
        ]
        return _from_stages(stages, num_layers)
    raise LlmplanError("plan has neither 'stages' nor 'device_map'; see docs/serve.md for the plan format")
