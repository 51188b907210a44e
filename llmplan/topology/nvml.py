"""NVML discovery behind one small adapter, so tests feed it a recorded device description.

:class:`NvmlDevices` is the whole surface llmplan needs from NVML. :class:`PynvmlDevices` implements it on
``pynvml`` (package nvidia-ml-py) and wraps **every** call: a call that fails (NotSupported,
FunctionNotFound on an old driver, an undecodable name) answers None and discovery carries on.
:class:`RecordedDevices` implements it from a dict (a YAML/JSON recording, see :func:`record`).
:func:`layout_from_nvml` holds the logic, shared by both (see ../shared/nvml-topology.md):

* names and bus ids may be ``bytes`` (nvidia-ml-py < 11.515.48) or ``str``: both are normalised;
* GPUs are keyed by PCI bus id, never by CUDA ordinal;
* NV#: scan 4/6/12/18 links for sm6x/7x/8x/9x+ (looping to ``NVML_NVLINK_MAX_LINKS`` hits links that do not
  exist), skip links without P2P capability or not up, count links per remote bus id. Remote GPU -> that pair
  is ``NV<count>``; remote NVSwitch (type SWITCH, or a bus id that is not a visible GPU, or empty as inside
  VMs) -> the GPU is on the fabric with S links and every fabric pair is ``NV<min(Sa, Sb)>``;
* otherwise the pair's PCIe level comes from ``nvmlDeviceGetTopologyCommonAncestor``.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmplan.errors import LlmplanError
from llmplan.topology.graph import GpuRecord, HostLayout

# NVML_TOPOLOGY_* -> topo -m cell. INTERNAL (0) is "same board" (K80-style), which behaves like PIX.
ANCESTOR_TO_LINK = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
REMOTE_GPU, REMOTE_IBMNPU, REMOTE_SWITCH = 0, 1, 2


@dataclass(frozen=True)
class NvLinkInfo:
    up: bool
    p2p: bool
    remote_bus_id: str | bytes | None
    remote_type: int | None = None


class NvmlDevices(Protocol):
    """What llmplan asks NVML. Every method answers None when NVML cannot tell."""

    def count(self) -> int: ...
    def name(self, i: int) -> str | bytes | None: ...
    def memory_total_bytes(self, i: int) -> int | None: ...
    def power_limit_mw(self, i: int) -> int | None: ...
    def pci_bus_id(self, i: int) -> str | bytes | None: ...
    def numa_node(self, i: int) -> int | None: ...
    def cpu_affinity(self, i: int) -> str | None: ...
    def cuda_capability(self, i: int) -> tuple[int, int] | None: ...
    def pcie_gen(self, i: int) -> int | None: ...
    def common_ancestor(self, i: int, j: int) -> int | None: ...
    def nvlink(self, i: int, link: int) -> NvLinkInfo | None: ...


def text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    value = value.strip().rstrip("\x00")
    return value or None


_BUS = re.compile(r"^([0-9a-fA-F]{1,8}):([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})\.([0-7])$")


def normalise_bus_id(value: str | bytes | None) -> str | None:
    """``b"0000:19:00.0"`` / ``"00000000:19:00.0"`` -> ``"00000000:19:00.0"``; None if not a bus id."""
    s = text(value)
    if s is None:
        return None
    m = _BUS.match(s)
    if not m:
        return None
    dom, bus, dev, fn = m.groups()
    return f"{int(dom, 16):08X}:{int(bus, 16):02X}:{int(dev, 16):02X}.{fn}"


def links_to_scan(capability: tuple[int, int] | None) -> int:
    """NVLink ports per GPU by SM major (NCCL xml.cc): 4 sm6x, 6 sm7x, 12 sm8x, 18 sm9x and newer."""
    if capability is None:
        return 18  # unknown: scan the most; missing links just answer None
    major = capability[0]
    return 0 if major < 6 else {6: 4, 7: 6, 8: 12}.get(major, 18)


def cpulist_from_masks(masks: list[int]) -> str | None:
    """NVML's CPU affinity (64-bit words, word 0 = CPUs 0-63) as a Linux cpulist ``0-23,48-71``."""
    cpus = [w * 64 + b for w, m in enumerate(masks) for b in range(64) if (int(m) >> b) & 1]
    if not cpus:
        return None
    ranges: list[str] = []
    start = prev = cpus[0]
    for c in cpus[1:] + [None]:  # type: ignore[list-item]
        if c is not None and c == prev + 1:
            prev = c
            continue
        ranges.append(f"{start}-{prev}" if prev > start else f"{start}")
        if c is not None:
            start = prev = c
    return ",".join(ranges)


def layout_from_nvml(dev: NvmlDevices, host: str = "node0") -> HostLayout:
    n = dev.count()
    if n <= 0:
        raise LlmplanError("NVML reports no GPUs; use --source preset:NAME or --source file:PATH")
    bus = [normalise_bus_id(dev.pci_bus_id(i)) for i in range(n)]
    by_bus = {b: i for i, b in enumerate(bus) if b is not None}
    records = []
    for i in range(n):
        mem = dev.memory_total_bytes(i)
        mw = dev.power_limit_mw(i)
        records.append(
            GpuRecord(
                name=text(dev.name(i)),
                memory_gib=None if mem is None else mem / 2**30,
                power_limit_w=None if mw is None else mw / 1000.0,
                numa_node=dev.numa_node(i),
                cpu_affinity=dev.cpu_affinity(i),
                pci_bus_id=bus[i],
                pcie_gen=dev.pcie_gen(i),
            )
        )
    direct: Counter[tuple[int, int]] = Counter()  # (i, j) counted from i's side
    switch = [0] * n
    for i in range(n):
        for link in range(links_to_scan(dev.cuda_capability(i))):
            info = dev.nvlink(i, link)
            if info is None or not info.p2p or not info.up:
                continue
            remote = normalise_bus_id(info.remote_bus_id)
            if info.remote_type == REMOTE_IBMNPU:
                continue  # NVLink to a POWER9 CPU, not GPU-GPU bandwidth
            j = by_bus.get(remote) if remote is not None else None
            if info.remote_type == REMOTE_SWITCH or (j is None and info.remote_type != REMOTE_GPU):
                switch[i] += 1
            elif j is not None and j != i:
                direct[(i, j)] += 1
            # remote type GPU but not visible (hidden from this container): no pair to credit
    gpu_links: dict[tuple[int, int], str] = {}
    for i in range(n):
        for j in range(i + 1, n):
            a, b = direct[(i, j)], direct[(j, i)]
            nv = min(a, b) if a and b else max(a, b)
            if switch[i] and switch[j]:
                nv += min(switch[i], switch[j])
            if nv:
                gpu_links[(i, j)] = f"NV{nv}"
            else:
                level = dev.common_ancestor(i, j)
                # An unanswered level is treated as the farthest one, so a plan never over-trusts it.
                gpu_links[(i, j)] = ANCESTOR_TO_LINK.get(level if level is not None else 50, "SYS")
    return HostLayout(gpus=records, gpu_links=gpu_links, host=host)


class RecordedDevices:
    """NVML answers replayed from a recording (YAML/JSON); an absent field answers None like NotSupported.

    Format (``record()`` writes it)::

        nvml_recording: 1
        devices:
          - {name: NVIDIA A100-SXM4-80GB, memory_total: 85899345920, power_limit_mw: 400000,
             pci_bus_id: "00000000:07:00.0", numa_node: 3, cpu_affinity: 48-63, cuda_capability: [8, 0],
             pcie_gen: 4, nvlinks: [{up: true, p2p: true, remote_bus_id: "...", remote_type: 2}, ...]}
        common_ancestor: {"0,1": 40}
    """

    def __init__(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("devices"), list):
            raise LlmplanError(
                "NVML recording needs a `devices` list; write one with "
                "`llmplan topology --source nvml --record-nvml PATH`"
            )
        self.devices: list[dict[str, Any]] = data["devices"]
        self.ancestors: dict[str, int] = {
            str(k).replace(" ", ""): v for k, v in (data.get("common_ancestor") or {}).items()
        }

    def count(self) -> int:
        return len(self.devices)

    def _get(self, i: int, key: str) -> Any:
        return self.devices[i].get(key)

    def name(self, i: int) -> str | bytes | None:
        return self._get(i, "name")

    def memory_total_bytes(self, i: int) -> int | None:
        return self._get(i, "memory_total")

    def power_limit_mw(self, i: int) -> int | None:
        return self._get(i, "power_limit_mw")

    def pci_bus_id(self, i: int) -> str | bytes | None:
        return self._get(i, "pci_bus_id")

    def numa_node(self, i: int) -> int | None:
        return self._get(i, "numa_node")

    def cpu_affinity(self, i: int) -> str | None:
        v = self._get(i, "cpu_affinity")
        return None if v is None else str(v)

    def cuda_capability(self, i: int) -> tuple[int, int] | None:
        v = self._get(i, "cuda_capability")
        return None if v is None else (int(v[0]), int(v[1]))

    def pcie_gen(self, i: int) -> int | None:
        return self._get(i, "pcie_gen")

    def common_ancestor(self, i: int, j: int) -> int | None:
        return self.ancestors.get(f"{i},{j}", self.ancestors.get(f"{j},{i}"))

    def nvlink(self, i: int, link: int) -> NvLinkInfo | None:
        links = self._get(i, "nvlinks") or []
        if link >= len(links) or links[link] is None:
            return None
        d = links[link]
        return NvLinkInfo(bool(d.get("up")), bool(d.get("p2p")), d.get("remote_bus_id"), d.get("remote_type"))


class PynvmlDevices:
    """The real NVML, through nvidia-ml-py. Construct it to initialise NVML; raises LlmplanError if absent."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError as exc:
            raise LlmplanError(f"nvidia-ml-py is not importable ({exc}); pip install nvidia-ml-py") from None
        self.nv = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded / ...
            raise LlmplanError(f"NVML is not available ({exc.__class__.__name__}: {exc})") from None
        self.handles: list[Any] = []
        n = self._call(pynvml.nvmlDeviceGetCount) or 0
        for i in range(n):
            self.handles.append(self._call(pynvml.nvmlDeviceGetHandleByIndex, i))
        self.ncpu_words = max(1, math.ceil((os.cpu_count() or 64) / 64))

    @staticmethod
    def _call(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:  # every NVML call may fail on some driver/part; "unknown" is a valid answer
            return None

    def count(self) -> int:
        return len(self.handles)

    def _h(self, i: int, fn_name: str, *args: Any) -> Any:
        fn = getattr(self.nv, fn_name, None)
        h = self.handles[i]
        if fn is None or h is None:
            return None
        return self._call(fn, h, *args)

    def name(self, i: int) -> str | bytes | None:
        return self._h(i, "nvmlDeviceGetName")

    def memory_total_bytes(self, i: int) -> int | None:
        info = self._h(i, "nvmlDeviceGetMemoryInfo")
        return None if info is None else int(info.total)

    def power_limit_mw(self, i: int) -> int | None:
        v = self._h(i, "nvmlDeviceGetEnforcedPowerLimit")
        return None if v is None else int(v)

    def pci_bus_id(self, i: int) -> str | bytes | None:
        info = self._h(i, "nvmlDeviceGetPciInfo")
        return None if info is None else info.busId

    def _sysfs(self, i: int, leaf: str) -> str | None:
        bus = normalise_bus_id(self.pci_bus_id(i))
        if bus is None:
            return None
        try:
            return (Path("/sys/bus/pci/devices") / bus[4:].lower() / leaf).read_text().strip()
        except OSError:
            return None

    def numa_node(self, i: int) -> int | None:
        v = self._h(i, "nvmlDeviceGetNumaNodeId")
        if v is None:
            s = self._sysfs(i, "numa_node")
            v = int(s) if s and s.lstrip("-").isdigit() else None
        return None if v is None or v < 0 else int(v)

    def cpu_affinity(self, i: int) -> str | None:
        masks = self._h(i, "nvmlDeviceGetCpuAffinity", self.ncpu_words)
        got = cpulist_from_masks(list(masks)) if masks is not None else None
        return got or self._sysfs(i, "local_cpulist")

    def cuda_capability(self, i: int) -> tuple[int, int] | None:
        v = self._h(i, "nvmlDeviceGetCudaComputeCapability")
        return None if v is None else (int(v[0]), int(v[1]))

    def pcie_gen(self, i: int) -> int | None:
        v = self._h(i, "nvmlDeviceGetMaxPcieLinkGeneration")
        return None if v is None else int(v)

    def common_ancestor(self, i: int, j: int) -> int | None:
        fn = getattr(self.nv, "nvmlDeviceGetTopologyCommonAncestor", None)
        if fn is None or self.handles[i] is None or self.handles[j] is None:
            return None
        v = self._call(fn, self.handles[i], self.handles[j])
        return None if v is None else int(v)

    def nvlink(self, i: int, link: int) -> NvLinkInfo | None:
        nv = self.nv
        state = self._h(i, "nvmlDeviceGetNvLinkState", link)
        if state is None:
            return None
        # NVML_NVLINK_CAP_P2P_SUPPORTED is 0; pass ints, never the package's tuple-valued constants.
        cap = getattr(nv, "NVML_NVLINK_CAP_P2P_SUPPORTED", 0)
        p2p = self._h(i, "nvmlDeviceGetNvLinkCapability", link, cap if isinstance(cap, int) else 0)
        remote = self._h(i, "nvmlDeviceGetNvLinkRemotePciInfo", link)
        rtype = self._h(i, "nvmlDeviceGetNvLinkRemoteDeviceType", link)
        return NvLinkInfo(
            bool(state),
            bool(p2p),
            None if remote is None else remote.busId,
            None if rtype is None else int(rtype),
        )

    def close(self) -> None:
        self._call(self.nv.nvmlShutdown)


def record(dev: NvmlDevices) -> dict[str, Any]:
    """Everything :func:`layout_from_nvml` asks, as a recording :class:`RecordedDevices` replays."""
    n = dev.count()
    devices = []
    for i in range(n):
        cap = dev.cuda_capability(i)
        links = [dev.nvlink(i, k) for k in range(links_to_scan(cap))]
        while links and links[-1] is None:
            links.pop()
        devices.append(
            {
                "name": text(dev.name(i)),
                "memory_total": dev.memory_total_bytes(i),
                "power_limit_mw": dev.power_limit_mw(i),
                "pci_bus_id": text(dev.pci_bus_id(i)),
                "numa_node": dev.numa_node(i),
                "cpu_affinity": dev.cpu_affinity(i),
                "cuda_capability": None if cap is None else list(cap),
                "pcie_gen": dev.pcie_gen(i),
                "nvlinks": [
                    None
                    if lk is None
                    else {
                        "up": lk.up,
                        "p2p": lk.p2p,
                        "remote_bus_id": text(lk.remote_bus_id),
                        "remote_type": lk.remote_type,
                    }
                    for lk in links
                ],
            }
        )
    ancestors = {f"{i},{j}": dev.common_ancestor(i, j) for i in range(n) for j in range(i + 1, n)}
    return {
        "nvml_recording": 1,
        "devices": devices,
        "common_ancestor": {k: v for k, v in ancestors.items() if v is not None},
    }
