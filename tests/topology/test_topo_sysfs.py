"""NIC placement for the NVML source from a fake /sys tree (directories and symlinks, as the kernel has)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmplan.errors import LlmplanError
from llmplan.topology import load_topology
from llmplan.topology.graph import GpuRecord
from llmplan.topology.sysfs import classify, sysfs_nics


def _device(root: Path, path: str, numa: int | None = None) -> Path:
    d = root / "devices" / path
    d.mkdir(parents=True)
    if numa is not None:
        (d / "numa_node").write_text(f"{numa}\n")
    bus = root / "bus" / "pci" / "devices"
    bus.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(d, bus), bus / d.name)
    return d


def _nic(root: Path, name: str, dev: Path) -> None:
    ib = root / "class" / "infiniband" / name
    ib.mkdir(parents=True)
    os.symlink(os.path.relpath(dev, ib), ib / "device")


def _fake_sys(root: Path) -> list[GpuRecord]:
    # socket 0: a PCIe switch (upstream 17:00.0, downstream 18:00.0 / 18:01.0) with GPU0 and mlx5_0 below it;
    # GPU1 on another root port of the same host bridge; a two-level switch puts GPU2 deeper.
    _device(root, "pci0000:16/0000:16:02.0/0000:17:00.0/0000:18:00.0/0000:19:00.0", 0)
    nic0 = _device(root, "pci0000:16/0000:16:02.0/0000:17:00.0/0000:18:01.0/0000:1a:00.0", 0)
    _device(root, "pci0000:16/0000:16:03.0/0000:30:00.0", 0)
    _device(
        root, "pci0000:16/0000:16:02.0/0000:17:00.0/0000:18:02.0/0000:20:00.0/0000:21:00.0/0000:22:00.0", 0
    )
    # socket 1: GPU3 and mlx5_1 under their own host bridges
    _device(root, "pci0000:80/0000:80:01.0/0000:81:00.0", 1)
    nic1 = _device(root, "pci0000:a0/0000:a0:01.0/0000:a1:00.0", 1)
    _nic(root, "mlx5_0", nic0)
    _nic(root, "mlx5_1", nic1)
    buses = ["0000:19:00.0", "0000:30:00.0", "0000:22:00.0", "0000:81:00.0"]
    numa = [0, 0, 0, 1]
    return [
        GpuRecord(pci_bus_id=f"0000{b}".upper(), numa_node=n) for b, n in zip(buses, numa, strict=True)
    ] + [GpuRecord(pci_bus_id=None, numa_node=0)]


def test_nics_are_placed_like_topo_m(tmp_path):
    gpus = _fake_sys(tmp_path)
    names, links = sysfs_nics(gpus, root=tmp_path)
    assert names == ["mlx5_0", "mlx5_1"]
    assert links[(0, 0)] == "PIX"  # same switch
    assert links[(1, 0)] == "PHB"  # only the host bridge in common
    assert links[(2, 0)] == "PXB"  # two switch levels
    assert links[(3, 0)] == "SYS"  # other socket
    assert links[(3, 1)] == "NODE"  # other host bridge, same NUMA node
    assert links[(0, 1)] == "SYS"
    assert links[(4, 0)] == "SYS"  # unknown bus id: conservative


def test_no_infiniband_class_means_no_nics(tmp_path):
    assert sysfs_nics([GpuRecord(pci_bus_id="00000000:19:00.0")], root=tmp_path) == ([], {})


def test_classify_direct_cases():
    assert classify(["pci0000:00", "a", "g"], ["pci0000:00", "a", "n"], 0, 0) == "PIX"
    assert classify(["pci0000:00", "g"], ["pci0000:01", "n"], None, None) == "SYS"


def test_recording_with_nics_loads(tmp_path):
    rec = {
        "nvml_recording": 1,
        "devices": [{"name": "NVIDIA H100 80GB HBM3", "pci_bus_id": "00000000:19:00.0"}],
        "nics": [{"name": "mlx5_0", "links": ["PIX"]}],
    }
    f = tmp_path / "box.json"
    f.write_text(json.dumps(rec))
    G = load_topology(f"file:{f}")
    assert G.nodes["NIC0"]["name"] == "mlx5_0" and G.edges["GPU0", "NIC0"]["bandwidth_gbps"] == 48.0


def test_recording_with_wrong_nic_cell_count_is_refused(tmp_path):
    rec = {
        "nvml_recording": 1,
        "devices": [{"name": "NVIDIA L4"}],
        "nics": [{"name": "mlx5_0", "links": ["PIX", "SYS"]}],
    }
    f = tmp_path / "box.json"
    f.write_text(json.dumps(rec))
    with pytest.raises(LlmplanError, match="one cell per GPU"):
        load_topology(f"file:{f}")
