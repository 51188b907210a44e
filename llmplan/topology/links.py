"""Link table: what a ``nvidia-smi topo -m`` cell (or NVML's answer) is worth in GB/s and µs.

Bandwidths are **estimated achievable GB/s per direction**, taken from NCCL's topology model
(NVIDIA/nccl src/graph/topo.h, topo.cc) because NCCL is calibrated against what collectives reach;
the raw signalling rate is kept alongside for reference (docs/topology.md has the full table and sources,
which are summarised in ../shared/nvml-topology.md).

* NVLink: ``links x per-link`` for the generation of the slower endpoint (NVSwitch is non-blocking, so a
  fabric pair gets the whole ``NV<min(Sa,Sb)>``).
* PCIe paths (PIX, PXB, PHB, NODE): the x16 link of the slower endpoint's generation; what separates them
  is latency (more bridges/host hops). SYS also crosses the CPU-CPU link, which NCCL rates by CPU
  family; the CPU is not in ``topo -m``, so it is inferred from the PCIe generation (Gen3 hosts are
  Skylake-class 10, Gen4 hosts are mostly EPYC Rome/Milan 16, Gen5 hosts Sapphire Rapids-class 22).
* NET: one 400 Gb/s NDR InfiniBand/RoCE rail per GPU (DGX H100: 8x ConnectX-7), 50 GB/s.
* Latency: NCCL's per-hop LL latencies (src/graph/tuning.cc: NVLink 0.6 µs, PCIe 1.0 µs per hop, network
  2.7 µs + both hosts' PCIe hops, rounded up to 5 µs); PCIe paths count the bridges the cell names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# GB/s per link per direction: (NCCL model, raw).
NVLINK_PER_LINK: dict[str, tuple[float, float]] = {
    "nvlink1": (18.0, 20.0),  # P100, topo.h SM60_NVLINK_BW
    "nvlink2": (20.0, 25.0),  # V100, SM70_NVLINK_BW
    "nvlink3": (20.0, 25.0),  # A100/A800, SM80_NVLINK_BW
    "ga102": (12.0, 14.0625),  # RTX 3090 / A40 / RTX A6000 bridge, SM86_NVLINK_BW
    "nvlink4": (20.6, 25.0),  # H100/H200/H20, SM90_NVLINK_BW
    "nvlink5": (40.1, 50.0),  # Blackwell, SM100_NVLINK_BW
}
# Used when the GPU model is unknown (a bare topo -m file): the lowest post-Pascal per-link figure.
NVLINK_DEFAULT_GEN = "nvlink2"

# x16 PCIe, GB/s per direction: (NCCL model width*{60,120,240}/80, raw after 128b/130b encoding).
PCIE_X16: dict[int, tuple[float, float]] = {
    3: (12.0, 15.75),
    4: (24.0, 31.5),
    5: (48.0, 63.0),
    6: (96.0, 121.0),
}
# CPU-CPU (QPI/UPI/xGMI) GB/s, keyed by the host's PCIe generation as the CPU-family proxy (topo.h *_QPI_BW).
INTER_SOCKET: dict[int, float] = {3: 10.0, 4: 16.0, 5: 22.0, 6: 40.0}

NET_BANDWIDTH_GBPS = 50.0  # 400 Gb/s NDR per GPU rail
NET_LATENCY_US = 5.0

NVLINK_LATENCY_US = 0.6
# PCIe hops a cell implies (NCCL: 1.0 µs per PCIe hop, LL protocol).
PCIE_LATENCY_US: dict[str, float] = {"PIX": 1.0, "PXB": 2.0, "PHB": 2.0, "NODE": 3.0, "SYS": 4.0}

PCIE_KINDS = ("PIX", "PXB", "PHB", "NODE", "SYS")
LINK_KINDS = (*PCIE_KINDS, "NET")  # plus "NV<n>"
# Drivers before ~2017 printed SOC where newer ones print SYS.
ALIASES = {"SOC": "SYS"}
_NV = re.compile(r"^NV(\d+)$")


@dataclass(frozen=True, slots=True)
class Link:
    link: str
    nvlinks: int
    bandwidth_gbps: float
    latency_us: float


def parse_cell(cell: str) -> tuple[str, int] | None:
    """``"NV12"`` -> ``("NV12", 12)``, ``"PIX"`` -> ``("PIX", 0)``; None if not a link cell."""
    cell = ALIASES.get(cell, cell)
    m = _NV.match(cell)
    if m:
        n = int(m.group(1))
        return (cell, n) if n > 0 else None
    if cell in LINK_KINDS:
        return cell, 0
    return None


def estimate(link: str, nvlinks: int, *, nvlink_gen: str | None = None, pcie_gen: int = 3) -> Link:
    """Bandwidth/latency of one path. ``nvlink_gen``/``pcie_gen`` are the slower endpoint's."""
    if nvlinks > 0:
        per_link = NVLINK_PER_LINK[nvlink_gen or NVLINK_DEFAULT_GEN][0]
        return Link(f"NV{nvlinks}", nvlinks, round(nvlinks * per_link, 3), NVLINK_LATENCY_US)
    if link == "NET":
        return Link("NET", 0, NET_BANDWIDTH_GBPS, NET_LATENCY_US)
    pcie = PCIE_X16.get(pcie_gen, PCIE_X16[3])[0]
    bw = min(pcie, INTER_SOCKET.get(pcie_gen, INTER_SOCKET[3])) if link == "SYS" else pcie
    return Link(link, 0, bw, PCIE_LATENCY_US[link])


def slower_nvlink_gen(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return a or b
    return a if NVLINK_PER_LINK[a][0] <= NVLINK_PER_LINK[b][0] else b
