"""Every real `nvidia-smi topo -m` output in ../shared/fixtures/topology parses to what the file says.

The expected values below were read off each fixture by hand (ground truth, not parser output).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import pytest

from llmplan.topology import gpu_nodes, load_topology
from llmplan.topology.smi import parse_topo_matrix


def _fixture_dir() -> Path:
    data_dir = os.environ.get("LLMPLAN_DATA_DIR")
    candidates = [Path(data_dir).parent / "fixtures" / "topology"] if data_dir else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "topology")
    for c in candidates:
        if c.is_dir():
            return c
    pytest.skip("../shared/fixtures/topology is not present on this machine")


FIX = _fixture_dir()
H8 = [0, 0, 0, 0, 1, 1, 1, 1]
C3 = ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID")
C2 = ("CPU Affinity", "NUMA Affinity")

# file -> (gpus, nic names, {(i, j): cell}, {(gpu, nic): cell}, numa per GPU, {gpu: cpu affinity}, columns)
EXPECTED: dict[str, tuple] = {
    "1gpu-4nic-tabs.txt": (
        1,
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"],
        {},
        {(0, 0): "SYS", (0, 2): "NODE"},
        [1],
        {0: "64-127,192-255"},
        C3,
    ),
    "1gpu-tabs-gpu-numa-id.txt": (1, [], {}, {}, [0], {0: "0-7"}, C3),
    "2gpu-nv12-1nic.txt": (
        2,
        ["mlx4_0"],
        {(0, 1): "NV12"},
        {(0, 0): "NODE", (1, 0): "NODE"},
        [0, 0],
        {1: "0-95"},
        C3,
    ),
    "2gpu-nv2-no-legend.txt": (2, [], {(0, 1): "NV2"}, {}, [None, None], {0: "0-23"}, C2),
    "2x-rtx6000ada-phb-2nic.txt": (
        2,
        ["mlx5_0", "mlx5_1"],
        {(0, 1): "PHB"},
        {(1, 1): "NODE"},
        [0, 0],
        {0: "0-23"},
        C3,
    ),
    "4x-h100-nv18-blank-affinity.txt": (
        4,
        [],
        {(0, 3): "NV18", (1, 2): "NV18"},
        {},
        [0, 1, 1, 1],
        {0: "44-51,148-155", 1: None, 3: None},
        C3,
    ),
    "5gpu-mixed-phb-node-sys-spaces-issue-paste.txt": (
        5,
        [],
        {(0, 1): "SYS", (1, 2): "PHB", (1, 3): "NODE", (3, 4): "PHB", (2, 4): "NODE"},
        {},
        [1, 0, 0, 0, 0],
        {0: "8-15,24-31", 4: "0-7,16-23"},
        C3,
    ),
    "6gpu-pcie-pix-node-sys-2numa.txt": (
        6,
        [],
        {(0, 1): "PIX", (0, 2): "NODE", (0, 4): "SYS", (2, 3): "PIX", (4, 5): "PIX"},
        {},
        [0, 0, 0, 0, 1, 1],
        {4: "24-47,72-95"},
        C3,
    ),
    "8x-h100-nv18-1nic-indented.txt": (
        8,
        ["NIC0"],
        {(0, 7): "NV18"},
        {(7, 0): "SYS"},
        H8,
        {3: "0-103", 4: "104-207"},
        C3,
    ),
    "8x-h100-nv18-no-nic.txt": (8, [], {(0, 1): "NV18", (6, 7): "NV18"}, {}, [0] * 8, {7: "0-63"}, C3),
    "a100-2gpu-della-mlx5-old-numa-only.txt": (
        2,
        ["mlx5_0", "mlx5_1"],
        {(0, 1): "SYS"},
        {(0, 0): "NODE", (0, 1): "SYS", (1, 1): "NODE"},
        [0, 1],
        {0: "0-63", 1: "64-127"},
        C2,
    ),
    "a100-8gpu-nv12-2numa-condensed-columns.txt": (
        8,
        [],
        {(0, 7): "NV12"},
        {},
        H8,
        {3: "0-23", 4: "24-47"},
        C2,
    ),
    "a100-sxm4-8gpu-dgx-a100-nv12-12nic-mlx5-cols.txt": (
        8,
        [f"mlx5_{k}" for k in range(12)],
        {(0, 1): "NV12", (3, 6): "NV12"},
        {(0, 0): "PXB", (0, 2): "SYS", (2, 2): "PXB", (4, 6): "PXB", (6, 8): "PXB", (7, 11): "SYS"},
        [3, 3, 1, 1, 7, 7, 5, 5],
        {0: "48-63,176-191", 6: "80-95,208-223"},
        C2,
    ),
    "dgx1-8gpu-topo-mp-pcie-only-no-nvlink-legend.txt": (
        8,
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"],
        {(0, 1): "PIX", (0, 2): "PHB", (0, 4): "SYS", (6, 7): "PIX"},
        {(0, 0): "PIX", (0, 1): "PHB", (4, 2): "PIX", (7, 3): "PIX", (0, 3): "SYS"},
        H8,
        {0: "0-19,40-59", 5: "20-39,60-79"},
        C2,
    ),
    "h100-8gpu-nv18-2numa-ht-ranges-spaces.txt": (
        8,
        [],
        {(2, 5): "NV18"},
        {},
        H8,
        {0: "0-51,104-155", 7: "52-103,156-207"},
        C2,
    ),
    "h100-sxm-8gpu-della-pli-nv18-6nic-blank-cpu-affinity.txt": (
        8,
        [f"mlx5_{k}" for k in range(6)],
        {(0, 4): "NV18"},
        {
            (0, 0): "PIX",
            (0, 1): "PIX",
            (3, 2): "PIX",
            (4, 3): "PIX",
            (4, 4): "PIX",
            (6, 5): "PIX",
            (1, 0): "NODE",
        },
        H8,
        {0: None, 3: None, 4: "1", 7: "1"},
        C3,
    ),
    "h20-8gpu-nv18-2nic-spaces-no-legend.txt": (
        8,
        ["NIC0", "NIC1"],
        {(1, 6): "NV18"},
        {(0, 0): "SYS", (4, 0): "NODE", (6, 1): "PHB"},
        H8,
        {4: "96-191,288-383"},
        C3,
    ),
    "igx-1gpu-pxb-2nic-dedented.txt": (
        1,
        ["mlx5_0", "mlx5_1"],
        {},
        {(0, 0): "PXB", (0, 1): "PXB"},
        [0],
        {0: "0-11"},
        C3,
    ),
    "rtx4090-8gpu-all-sys-2nic-issue-paste.txt": (
        8,
        ["NIC0", "NIC1"],
        {(0, 1): "SYS", (5, 6): "SYS"},
        {(6, 0): "PHB", (6, 1): "PHB", (0, 0): "SYS"},
        H8,
        {4: "56-111,168-223"},
        C3,
    ),
    "rtx6000ada-4gpu-2numa-mlx5-spaces.txt": (
        4,
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"],
        {(0, 1): "NODE", (0, 2): "SYS", (2, 3): "NODE"},
        {(0, 0): "NODE", (0, 2): "SYS", (3, 3): "NODE"},
        [0, 0, 1, 1],
        {2: "32-63"},
        C3,
    ),
    "v100-4gpu-power9-traverse-nv3-mlx5.txt": (
        4,
        ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3"],
        {(0, 1): "NV3", (0, 2): "SYS", (2, 3): "NV3"},
        {(0, 0): "NODE", (2, 2): "NODE", (0, 2): "SYS"},
        [0, 0, 8, 8],
        {2: "64-127"},
        C2,
    ),
    "v100-sxm2-8gpu-dgx1-hybrid-cube-mesh-mlx5-no-numa.txt": (
        8,
        ["mlx5_0"],
        {(0, 1): "NV1", (0, 3): "NV2", (0, 5): "SYS", (3, 7): "NV1", (6, 7): "NV2"},
        {(2, 0): "PIX", (0, 0): "NODE", (4, 0): "SYS"},
        [None] * 8,
        {4: "12-23,36-47"},
        ("CPU Affinity",),
    ),
    "v100-sxm2-8gpu-hybrid-cube-mesh-2nic-messy-tabs.txt": (
        8,
        ["mlx5_0", "mlx5_1"],
        {(0, 1): "NV1", (0, 2): "NV2", (0, 4): "SYS", (0, 7): "NV2", (4, 7): "NV1"},
        {(0, 0): "NODE", (0, 1): "SYS", (6, 1): "PIX", (4, 1): "NODE"},
        H8,
        {4: "24-47,72-95"},
        C2,
    ),
}


def _fixtures() -> list[str]:
    return sorted(p.name for p in FIX.glob("*.txt"))


def test_every_fixture_has_hand_written_expectations():
    # ../shared can gain fixtures outside this repository's commits. A new one must still
    # parse and agree with the independent GPU count (the test below, which does fail), but
    # the absence of hand-checked cells is a to-do, not a defect: skip loudly, naming it.
    missing = sorted(set(_fixtures()) - set(EXPECTED))
    if missing:
        pytest.skip(f"new fixtures parse but need hand-checked expected values in EXPECTED: {missing}")


@pytest.mark.parametrize("name", _fixtures())
def test_fixture_parses_to_what_the_file_says(name):
    text = (FIX / name).read_text()
    m = parse_topo_matrix(text)
    # independent count: rows whose first token is GPU<n> and which hold the X self-marker
    rows = [ln.split() for ln in text.splitlines()]
    assert len(m.gpus) == sum(1 for t in rows if t and re.fullmatch(r"GPU\d+", t[0]) and "X" in t)
    assert len(m.gpu_links) == len(m.gpus) * (len(m.gpus) - 1) // 2
    if name not in EXPECTED:
        return
    n, nics, cells, nic_cells, numa, cpu, columns = EXPECTED[name]
    assert len(m.gpus) == n
    assert m.nics == nics
    assert m.columns == columns
    for pair, cell in cells.items():
        assert m.gpu_links[pair] == cell, pair
    for pair, cell in nic_cells.items():
        assert m.gpu_nic_links[pair] == cell, pair
    assert [g.numa_node for g in m.gpus] == numa
    for i, aff in cpu.items():
        assert m.gpus[i].cpu_affinity == aff, i


def test_fixture_loads_as_graph_with_model_and_bandwidths():
    path = FIX / "a100-sxm4-8gpu-dgx-a100-nv12-12nic-mlx5-cols.txt"
    G = load_topology(f"file:{path}", gpu_model="A100-SXM-80GB")
    assert gpu_nodes(G) == [f"GPU{i}" for i in range(8)]
    assert G.edges["GPU0", "GPU5"] == {
        "link": "NV12",
        "nvlinks": 12,
        "bandwidth_gbps": 240.0,
        "latency_us": 0.6,
    }
    assert G.nodes["NIC11"] == {"kind": "nic", "name": "mlx5_11", "host": "node0"}
    assert G.edges["GPU0", "NIC0"]["link"] == "PXB" and G.edges["GPU0", "NIC0"]["bandwidth_gbps"] == 24.0
    assert G.nodes["GPU6"]["numa_node"] == 5 and G.nodes["GPU6"]["model"] == "A100-SXM-80GB"


def test_bare_topo_file_warns_once_about_the_unknown_model():
    path = FIX / "6gpu-pcie-pix-node-sys-2numa.txt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        G = load_topology(f"file:{path}")
    msgs = [str(w.message) for w in caught if "does not name the GPU model" in str(w.message)]
    assert len(msgs) == 1 and "--gpu-model" in msgs[0]
    assert G.nodes["GPU0"]["model"] == "unknown" and G.nodes["GPU0"]["bf16_tflops"] == 65.0
    # unknown model: Gen3 PCIe is assumed (conservative), SYS crosses a Skylake-class UPI link
    assert G.edges["GPU0", "GPU1"]["bandwidth_gbps"] == 12.0
    assert G.edges["GPU0", "GPU4"]["bandwidth_gbps"] == 10.0
