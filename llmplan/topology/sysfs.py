"""Place NICs for the NVML source: NVML has no NIC calls, so walk ``/sys/class/infiniband/*/device``.

A GPU-NIC pair is classified the way ``nvidia-smi topo -m`` prints it, from the two devices' PCI paths
under ``/sys/devices`` (``pci0000:16/0000:16:02.0/0000:17:00.0/...``):

* different host bridges (first component): ``NODE`` on the same NUMA node, ``SYS`` otherwise;
* only the host bridge in common: ``PHB``;
* a common bridge with both devices at most one level below it: ``PIX`` (one PCIe switch; its upstream and
  downstream ports show up as separate bridges in sysfs, which is why "one level" and not "one bridge");
* deeper: ``PXB``.

A GPU whose PCI path cannot be read gets ``SYS`` to every NIC, the conservative answer.
"""

from __future__ import annotations

from pathlib import Path

from llmplan.topology.graph import GpuRecord


def _pci_path(root: Path, bus_id: str | None) -> list[str] | None:
    if not bus_id:
        return None
    dev = root / "bus" / "pci" / "devices" / bus_id[-12:].lower()  # "0000:19:00.0"
    try:
        parts = dev.resolve(strict=True).relative_to((root / "devices").resolve()).parts
    except (OSError, ValueError):
        return None
    return list(parts)


def _numa(root_dev: Path) -> int | None:
    try:
        v = int((root_dev / "numa_node").read_text().strip())
    except (OSError, ValueError):
        return None
    return v if v >= 0 else None


def classify(a: list[str], b: list[str], numa_a: int | None, numa_b: int | None) -> str:
    """The topo -m cell between two PCI devices given their sysfs paths (endpoint last)."""
    if a[0] != b[0]:
        return "NODE" if numa_a is not None and numa_a == numa_b else "SYS"
    pa, pb = a[:-1], b[:-1]
    common = 0
    for x, y in zip(pa, pb, strict=False):
        if x != y:
            break
        common += 1
    if common <= 1:
        return "PHB"
    return "PIX" if len(pa) - common <= 1 and len(pb) - common <= 1 else "PXB"


def sysfs_nics(
    gpus: list[GpuRecord], root: Path = Path("/sys")
) -> tuple[list[str], dict[tuple[int, int], str]]:
    """NIC names (``mlx5_0``...) and the cell of every (GPU, NIC) pair."""
    ib = root / "class" / "infiniband"
    try:
        devices = sorted(ib.iterdir(), key=lambda p: p.name)
    except OSError:
        return [], {}
    gpu_paths = [_pci_path(root, g.pci_bus_id) for g in gpus]
    names: list[str] = []
    links: dict[tuple[int, int], str] = {}
    for dev in devices:
        try:
            nic_dev = (dev / "device").resolve(strict=True)
            nic_path = list(nic_dev.relative_to((root / "devices").resolve()).parts)
        except (OSError, ValueError):
            continue
        k = len(names)
        names.append(dev.name)
        nic_numa = _numa(nic_dev)
        for i, (g, path) in enumerate(zip(gpus, gpu_paths, strict=True)):
            links[(i, k)] = "SYS" if path is None else classify(path, nic_path, g.numa_node, nic_numa)
    return names, links
