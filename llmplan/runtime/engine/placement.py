"""Device placement of layers from a ``--plan`` file (HELR device map / pipeline stages).

Accepted shapes (JSON or YAML):

* a plan written by ``llmplan plan --out plan.json``: instance ``--instance`` (default 0),
  each stage's ``gpus`` (``"GPU3"`` -> ``cuda:3``) holding layers ``[layer_start, layer_end)``;
  a tensor-parallel stage (several GPUs) is refused: the built-in engine runs pipeline
  stages only (serve such plans with the vLLM backend);
* ``{"stages": [{"device": "cuda:0", "layers": [0, 16]}, {"device": "cuda:1", "layers": [16, 32]}]}``
  (layer ranges half-open; ``"layer_start"``/``"layer_end"`` keys work too);
* ``{"device_map": {"model.layers.0": 0, ...}}`` (accelerate style; ints are CUDA ordinals,
  non-layer modules follow the first/last layer) or ``{"0": "cuda:0", ...}``, or a list;
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


def _gpu_device(label: str | int) -> str:
    if isinstance(label, int):
        return f"cuda:{label}"
    text = str(label)
    if text.upper().startswith("GPU") and text[3:].isdigit():
        return f"cuda:{int(text[3:])}"
    return text


def _from_llmplan_plan(plan: dict[str, Any], num_layers: int, instance: int) -> list[torch.device]:
    instances = plan["instances"]
    if not 0 <= instance < len(instances):
        raise LlmplanError(f"plan has {len(instances)} instance(s); instance {instance} does not exist")
    stages = []
    for st in instances[instance]["stages"]:
        gpus = list(st.get("gpus") or [])
        if len(gpus) != 1:
            raise LlmplanError(
                f"plan stage for layers [{st['layer_start']}, {st['layer_end']}) uses {len(gpus)} GPUs "
                "(tensor parallel); the built-in engine runs one device per stage: serve it with vLLM"
            )
        stages.append({"device": _gpu_device(gpus[0]), "layers": [st["layer_start"], st["layer_end"]]})
    return _from_stages(stages, num_layers)


def layer_devices_from_plan(  # noqa: C901 - a dict, a JSON or a YAML plan, each stage checked; each branch is one refusal
    plan: dict[str, Any] | str | Path | None, num_layers: int, device: str, instance: int = 0
) -> list[torch.device]:
    if plan is None:
        return [_check_device(device)] * num_layers
    if not isinstance(plan, dict):
        path = Path(plan)
        if not path.is_file():
            raise LlmplanError(f"plan file {path} not found; write one with `llmplan plan --out plan.json`")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                plan = yaml.safe_load(_read_plan_text(path))
            else:
                plan = json.loads(_read_plan_text(path))
        except LlmplanError:
            raise
        except Exception as e:  # noqa: BLE001 - JSON and YAML parse errors alike: one line
            raise LlmplanError(f"plan file {path} is not valid JSON/YAML ({type(e).__name__})") from None
        if not isinstance(plan, dict):
            raise LlmplanError(f"plan file {path} does not hold a plan object")
    assert isinstance(plan, dict)
    if "instances" in plan:
        try:
            return _from_llmplan_plan(plan, num_layers, instance)
        except (KeyError, TypeError) as e:
            raise LlmplanError(
                f"plan is malformed ({type(e).__name__}: {e}); re-create it with `llmplan plan`"
            ) from e
    for key in ("placement", "plan"):
        if isinstance(plan.get(key), dict):
            return layer_devices_from_plan(plan[key], num_layers, device, instance)
    if "stages" in plan:
        return _from_stages(list(plan["stages"]), num_layers)
    if "device_map" in plan:
        dm = plan["device_map"]
        items = dm.items() if isinstance(dm, dict) else enumerate(dm)
        stages = []
        for key, dev in items:
            last = str(key).rsplit(".", 1)[-1]
            if not last.isdigit():
                continue  # embed_tokens / norm / lm_head follow their neighbouring layer
            stages.append({"device": _gpu_device(dev), "layers": [int(last), int(last) + 1]})
        return _from_stages(stages, num_layers)
    raise LlmplanError("plan has neither 'stages' nor 'device_map'; see docs/serve.md for the plan format")


def _read_plan_text(path: Path) -> str:
    """The plan file's text; a binary, unreadable or non-UTF-8 file is refused in one line."""
    from llmplan.validate import read_text

    return read_text(path, "plan file", "write one with `llmplan plan --out plan.json`")
