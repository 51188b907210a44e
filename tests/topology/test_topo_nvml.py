"""NVML discovery fed recorded device descriptions (no GPU needed): NV# derivation, bytes/str, bus ids."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmplan.topology import load_topology
from llmplan.topology.graph import build_graph
from llmplan.topology.nvml import (
    RecordedDevices,
    cpulist_from_masks,
    layout_from_nvml,
    links_to_scan,
    normalise_bus_id,
    record,
)

DATA = Path(__file__).parent / "data"


def _rec(name: str) -> RecordedDevices:
    return RecordedDevices(yaml.safe_load((DATA / name).read_text()))


def test_nvswitch_pairs_are_nv_min_of_switch_links():
    layout = layout_from_nvml(_rec("nvml-4x-a100-nvswitch.yaml"))
    # GPU3 has 2 of its 12 links down: its fabric pairs are NV10 = min(12, 10)
    assert layout.gpu_links == {
        (0, 1): "NV12",
        (0, 2): "NV12",
        (1, 2): "NV12",
        (0, 3): "NV10",
        (1, 3): "NV10",
        (2, 3): "NV10",
    }
    g0 = layout.gpus[0]
    assert g0.name == "NVIDIA A100-SXM4-80GB"  # recorded as bytes (!!binary): decoded
    assert layout.gpus[1].pci_bus_id == "00000000:0F:00.0"  # legacy 4-digit domain normalised
    assert g0.memory_gib == 80.0 and g0.power_limit_w == 400.0 and g0.numa_node == 3 and g0.pcie_gen == 4


def test_nvswitch_recording_loads_as_graph_through_file_source():
    G = load_topology(f"file:{DATA / 'nvml-4x-a100-nvswitch.yaml'}")
    assert G.nodes["GPU0"]["model"] == "A100-SXM-80GB" and G.nodes["GPU2"]["cpu_affinity"] == "16-31,144-159"
    assert G.edges["GPU0", "GPU1"]["bandwidth_gbps"] == 240.0  # 12 x 20 GB/s (NCCL SM80 per-link)
    assert G.edges["GPU0", "GPU3"]["bandwidth_gbps"] == 200.0


def test_bridge_pair_is_nv_count_with_ga102_rate():
    G = build_graph([layout_from_nvml(_rec("nvml-2x-rtx3090-nvlink-bridge.yaml"))], name="t", source="t")
    assert G.edges["GPU0", "GPU1"] == {"link": "NV4", "nvlinks": 4, "bandwidth_gbps": 48.0, "latency_us": 0.6}
    # NVML's enforced 250 W limit on GPU1 scales its compute (cube-root law)
    assert G.nodes["GPU1"]["power_limit_w"] == 250.0
    assert abs(G.nodes["GPU1"]["compute_scale"] - (250 / 350) ** (1 / 3)) < 1e-6


def _device(bus, links, cap=(8, 0)):
    return {
        "name": "NVIDIA A100-SXM4-80GB",
        "pci_bus_id": bus,
        "cuda_capability": list(cap),
        "nvlinks": links,
    }


def test_pcie_pairs_from_common_ancestor_and_unanswered_is_sys():
    data = {
        "devices": [_device("0:1:0.0", []), _device("0:2:0.0", []), _device("0:3:0.0", [])],
        "common_ancestor": {"0,1": 20, "1, 2": 40},
    }
    layout = layout_from_nvml(RecordedDevices(data))
    assert layout.gpu_links == {(0, 1): "PXB", (1, 2): "NODE", (0, 2): "SYS"}


def test_empty_remote_bus_id_counts_as_switch_and_hidden_gpu_is_skipped():
    sw = {"up": True, "p2p": True, "remote_bus_id": "", "remote_type": None}  # inside a VM (nccl#1182)
    hidden = {"up": True, "p2p": True, "remote_bus_id": "00000000:99:00.0", "remote_type": 0}
    no_p2p = {"up": True, "p2p": False, "remote_bus_id": "", "remote_type": 2}
    data = {"devices": [_device("0:1:0.0", [sw, sw, hidden, no_p2p]), _device("0:2:0.0", [sw, sw, sw])]}
    assert layout_from_nvml(RecordedDevices(data)).gpu_links == {(0, 1): "NV2"}


def test_record_round_trips_through_recorded_devices():
    src = _rec("nvml-4x-a100-nvswitch.yaml")
    again = RecordedDevices(record(src))
    assert layout_from_nvml(again).gpu_links == layout_from_nvml(src).gpu_links


def test_helpers():
    assert normalise_bus_id(b"0000:1a:00.0") == "00000000:1A:00.0"
    assert normalise_bus_id("") is None and normalise_bus_id("garbage") is None
    assert [links_to_scan(c) for c in ((6, 0), (7, 0), (8, 6), (9, 0), (10, 0), None)] == [
        4,
        6,
        12,
        18,
        18,
        18,
    ]
    assert cpulist_from_masks([0xFF00FF, 0]) == "0-7,16-23"
    assert cpulist_from_masks([0, 1 | (1 << 63)]) == "64,127"
    assert cpulist_from_masks([0]) is None
