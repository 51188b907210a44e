"""GPU spec table keyed by model, and the name -> model matcher.

Figures are per GPU, from the vendors' datasheets/whitepapers (H100/H800/H200/H20, HGX B200, A100/A800,
L40S/L40/A40/A10/L4, V100/P100/T4 datasheets; GA102 and Ada Lovelace whitepapers for GeForce/RTX parts;
AMD MI210 datasheet).

* ``memory_gib``: the usable total nvidia-smi reports (MiB / 1024) where a capture exists
  (../shared/fixtures/nvidia-smi: H100 80GB HBM3 81559 MiB, A100-SXM4-80GB 81920 MiB, L40S 46068 MiB,
  RTX 3090 24576 MiB), the nominal capacity otherwise. Discovery (NVML, nvidia-smi) overrides it with the
  value the device reports.
* ``bf16_tflops``: **dense** (no 2:4 sparsity) BF16 tensor throughput with FP32 accumulate, the mode
  inference kernels use; GeForce parts run FP32-accumulate at half rate (RTX 3090: 71, not 142).
  Pre-Ampere parts have no BF16: their FP16 tensor (V100, T4) or FP16 vector (P100) figure is used.
* ``fp8_tflops`` / ``int8_tops``: dense FP8 (E4M3, FP32 accumulate) and INT8 tensor throughput; 0 where
  the part has no such tensor path (A100 and older have no FP8: vLLM runs FP8 checkpoints there
  weight-only, Marlin, at the BF16 rate). ``sm``: compute capability x10 (FP8/INT4 kernels in vLLM
  need >= 80; BF16 needs >= 80).
* ``hbm_gbps``: peak device-memory bandwidth, GB/s.
* ``tdp_w``: board power (TDP/TGP), W — the reference for power-cap scaling.
* ``nvlinks``/``nvlink_gen``: NVLink links per GPU and generation (``ga102`` for the 3090/A40/A6000 bridge,
  which NCCL models at its own per-link rate); ``pcie_gen``: the host link, x16.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuSpec:
    model: str
    memory_gib: float
    bf16_tflops: float
    hbm_gbps: float
    tdp_w: float | None
    pcie_gen: int
    nvlinks: int = 0
    nvlink_gen: str | None = None
    fp8_tflops: float = 0.0
    int8_tops: float = 0.0
    sm: int = 80


def _s(model, mem, tflops, hbm, tdp, pcie, nvl=0, gen=None) -> GpuSpec:
    return GpuSpec(
        model, float(mem), float(tflops), float(hbm), None if tdp is None else float(tdp), pcie, nvl, gen
    )


GPU_SPECS: dict[str, GpuSpec] = {
    s.model: s
    for s in (
        _s("H100-SXM", 79.6, 989.4, 3350, 700, 5, 18, "nvlink4"),
        _s("H100-PCIe", 80, 756.0, 2000, 350, 5, 12, "nvlink4"),
        _s("H100-NVL", 94, 835.0, 3900, 400, 5, 12, "nvlink4"),
        _s("H200", 140.4, 989.4, 4800, 700, 5, 18, "nvlink4"),
        _s("H20", 95.6, 148.0, 4000, 400, 5, 18, "nvlink4"),
        _s("H800-SXM", 79.6, 989.4, 3350, 700, 5, 8, "nvlink4"),
        _s("B200", 180, 2250.0, 8000, 1000, 5, 18, "nvlink5"),
        _s("A100-SXM-80GB", 80, 312.0, 2039, 400, 4, 12, "nvlink3"),
        _s("A100-SXM-40GB", 40, 312.0, 1555, 400, 4, 12, "nvlink3"),
        _s("A100-PCIe-80GB", 80, 312.0, 1935, 300, 4, 12, "nvlink3"),
        _s("A100-PCIe-40GB", 40, 312.0, 1555, 250, 4, 12, "nvlink3"),
        _s("A800-SXM-80GB", 80, 312.0, 2039, 400, 4, 8, "nvlink3"),
        _s("L40S", 45.0, 362.05, 864, 350, 4),
        _s("L40", 45.0, 181.05, 864, 300, 4),
        _s("A40", 45.0, 149.7, 696, 300, 4, 4, "ga102"),
        _s("A10", 22.5, 125.0, 600, 150, 4),
        _s("L4", 22.5, 121.0, 300, 72, 4),
        _s("V100-SXM2-16GB", 16, 125.0, 900, 300, 3, 6, "nvlink2"),
        _s("V100-SXM2-32GB", 32, 125.0, 900, 300, 3, 6, "nvlink2"),
        _s("V100-PCIe", 16, 112.0, 900, 250, 3),
        _s("P100-SXM2", 16, 21.2, 732, 300, 3, 4, "nvlink1"),
        _s("P100-PCIe", 16, 18.7, 732, 250, 3),
        _s("T4", 15.0, 65.0, 320, 70, 3),
        _s("RTX-3090", 24.0, 71.0, 936, 350, 4, 4, "ga102"),
        _s("RTX-4090", 24.0, 165.2, 1008, 450, 4),
        _s("RTX-A6000", 48.0, 154.8, 768, 300, 4, 4, "ga102"),
        _s("RTX-6000-Ada", 48.0, 364.2, 960, 300, 4),
        _s("MI210", 64, 181.0, 1638, 300, 4),
    )
}

# model: (dense FP8 TFLOP/s, dense INT8 TOP/s, compute capability x10), from the same datasheets.
PRECISION_PEAKS: dict[str, tuple[float, float, int]] = {
    "H100-SXM": (1978.9, 1978.9, 90),
    "H100-PCIe": (1513.0, 1513.0, 90),
    "H100-NVL": (1670.5, 1670.5, 90),
    "H200": (1978.9, 1978.9, 90),
    "H20": (296.0, 296.0, 90),
    "H800-SXM": (1978.9, 1978.9, 90),
    "B200": (4500.0, 4500.0, 100),
    "A100-SXM-80GB": (0.0, 624.0, 80),
    "A100-SXM-40GB": (0.0, 624.0, 80),
    "A100-PCIe-80GB": (0.0, 624.0, 80),
    "A100-PCIe-40GB": (0.0, 624.0, 80),
    "A800-SXM-80GB": (0.0, 624.0, 80),
    "L40S": (733.0, 733.0, 89),
    "L40": (362.1, 362.1, 89),
    "A40": (0.0, 299.3, 86),
    "A10": (0.0, 250.0, 86),
    "L4": (242.0, 242.0, 89),
    "V100-SXM2-16GB": (0.0, 0.0, 70),
    "V100-SXM2-32GB": (0.0, 0.0, 70),
    "V100-PCIe": (0.0, 0.0, 70),
    "P100-SXM2": (0.0, 0.0, 60),
    "P100-PCIe": (0.0, 0.0, 60),
    "T4": (0.0, 130.0, 75),
    "RTX-3090": (0.0, 284.0, 86),
    "RTX-4090": (330.3, 660.6, 89),
    "RTX-A6000": (0.0, 309.7, 86),
    "RTX-6000-Ada": (728.5, 728.5, 89),
    "MI210": (0.0, 181.0, 90),
}
GPU_SPECS = {
    k: GpuSpec(
        **{
            **{f: getattr(v, f) for f in v.__dataclass_fields__},
            **dict(zip(("fp8_tflops", "int8_tops", "sm"), PRECISION_PEAKS[k], strict=True)),
        }
    )
    for k, v in GPU_SPECS.items()
}

# Deliberately low so that a plan made for an unidentified GPU under-promises: a T4-class part with a
# Gen3 link and no NVLink, no known TDP (so power caps cannot be scaled against it).
UNKNOWN = GpuSpec("unknown", 16.0, 65.0, 320.0, None, 3, sm=75)

# Ordered: the first pattern that matches the normalised name wins, so specific names precede general ones.
_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"H100.*(PCIE)", "H100-PCIe"),
    (r"H100.*NVL", "H100-NVL"),
    (r"H100", "H100-SXM"),
    (r"\bH200\b", "H200"),
    (r"\bH800\b", "H800-SXM"),
    (r"\bB200\b", "B200"),
    (r"\bH20\b", "H20"),
    (r"A800", "A800-SXM-80GB"),
    (r"A100.*PCIE.*\b40GB|A100.*\b40GB.*PCIE", "A100-PCIe-40GB"),
    (r"A100.*PCIE", "A100-PCIe-80GB"),
    (r"A100.*\b40GB", "A100-SXM-40GB"),
    (r"A100", "A100-SXM-80GB"),
    (r"L40S", "L40S"),
    (r"\bL40\b", "L40"),
    (r"\bA40\b", "A40"),
    (r"\bA10\b", "A10"),
    (r"\bL4\b", "L4"),
    (r"V100.*PCIE", "V100-PCIe"),
    (r"V100.*\b32GB", "V100-SXM2-32GB"),
    (r"V100", "V100-SXM2-16GB"),
    (r"P100.*SXM", "P100-SXM2"),
    (r"P100", "P100-PCIe"),
    (r"\bT4\b", "T4"),
    (r"RTX 3090", "RTX-3090"),
    (r"RTX 4090", "RTX-4090"),
    (r"RTX A6000", "RTX-A6000"),
    (r"RTX 6000 ADA", "RTX-6000-Ada"),
    (r"MI210", "MI210"),
)
_COMPILED = tuple((re.compile(p), m) for p, m in _PATTERNS)


def _normalise(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.upper()).replace("GEFORCE ", "").strip()


def match_model(name: str | None) -> str | None:
    """Spec-table key for a reported GPU name (``"NVIDIA H100 80GB HBM3"`` -> ``"H100-SXM"``), or None."""
    if not name:
        return None
    if name in GPU_SPECS:
        return name
    norm = _normalise(name)
    for key in GPU_SPECS:  # spec keys written with other separators ("rtx 3090", "A100 SXM 80GB")
        if _normalise(key) == norm:
            return key
    for pattern, model in _COMPILED:
        if pattern.search(norm):
            return model
    return None


def spec_for(name: str | None, *, warn: bool = True) -> GpuSpec:
    """The spec for a reported name; unknown names get :data:`UNKNOWN` and one warning, never an error."""
    model = match_model(name)
    if model is not None:
        return GPU_SPECS[model]
    if warn and not name:
        warnings.warn(
            "the source does not name the GPU model (a bare `nvidia-smi topo -m`); using conservative "
            f"defaults ({UNKNOWN.memory_gib:g} GiB, {UNKNOWN.bf16_tflops:g} TFLOP/s, "
            f"{UNKNOWN.hbm_gbps:g} GB/s). "
            "Pass --gpu-model, or append the output of `nvidia-smi --query-gpu=index,name,memory.total,"
            "power.limit,pci.bus_id --format=csv,noheader,nounits` to the file, to fix.",
            UnknownGpuWarning,
            stacklevel=3,
        )
    elif warn:
        warnings.warn(
            f"GPU model {name!r} is not in llmplan's spec table; using conservative defaults "
            f"({UNKNOWN.memory_gib:g} GiB, {UNKNOWN.bf16_tflops:g} TFLOP/s, {UNKNOWN.hbm_gbps:g} GB/s). "
            "Pass --gpu-model with a known model (see docs/topology.md) to fix.",
            UnknownGpuWarning,
            stacklevel=3,
        )
    return UNKNOWN


class UnknownGpuWarning(UserWarning):
    """A GPU name that the spec table does not know."""
