"""One flag vocabulary: parsers shared by every command that takes the same knob.

A knob has one spelling everywhere (``--power-cap GPU=W``, ``--rate-scale X``). An old
spelling still works for one release and prints one deprecation line on stderr naming the new
one.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmplan.errors import LlmplanError

POWER_CAP_METAVAR = "GPU=W"
POWER_CAP_HELP = (
    "Cap a GPU's power limit, GPU=WATTS (repeatable or comma-separated: 0=250,1=300; "
    "GPU0=250W also reads); compute scales with (cap/TDP)^(1/3)."
)
TOPOLOGY_HELP = "preset:NAME, file:PATH (a topology file), or auto (NVML, then nvidia-smi)."


def deprecated(old: str, new: str) -> None:
    """One line on stderr: the old spelling still works, this is the new one."""
    from llmplan.cli._common import err_console

    err_console.print(
        f"[yellow]deprecated:[/] {old} is the old spelling; write {new} (the old one goes in the next "
        "release)",
        highlight=False,
        soft_wrap=True,
        markup=True,
    )


def parse_power_caps(values: Iterable[str] | str | None) -> dict[int, float]:
    """``--power-cap`` values to {GPU index: watts}.

    The one syntax is ``GPU=WATTS`` (``0=250``, ``GPU0=250W``), repeatable or comma-separated.
    The old ``plan`` spelling ``IDX:WATTS`` is accepted with a deprecation line.
    """
    if values is None:
        return {}
    if isinstance(values, str):
        values = [values]
    caps: dict[int, float] = {}
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            gpu, sep, watts = part.partition("=")
            if not sep and ":" in part:
                gpu, _, watts = part.partition(":")
                sep = "="
                deprecated(f"--power-cap {part}", f"--power-cap {gpu.strip()}={watts.strip()}")
            try:
                if not sep:
                    raise ValueError
                idx = int(gpu.strip().upper().removeprefix("GPU"))
                w = float(watts.strip().upper().removesuffix("W"))
            except ValueError:
                raise LlmplanError(
                    f"--power-cap {part!r}: expected GPU=WATTS, e.g. --power-cap 0=250 (or 0=250,1=300)"
                ) from None
            if idx < 0 or not 0 < w < float("inf"):
                raise LlmplanError(
                    f"--power-cap {part!r}: the GPU index must be >= 0 and the watts positive, "
                    "e.g. --power-cap 0=250"
                )
            if idx in caps:
                raise LlmplanError(
                    f"--power-cap names GPU{idx} twice ({caps[idx]:g} W and {w:g} W); give each GPU one cap"
                )
            caps[idx] = w
    return caps


SERVING_ENGINE_HELP = (
    "Serving engine whose per-step overhead prices each step: llmplan | vllm | sglang | trtllm "
    "(llmplan.opcost.engines; llmplan's is measured, the others are published-figure estimates)."
)
