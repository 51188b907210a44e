"""The `smi` and `auto` sources against a stand-in `nvidia-smi` on PATH, and user YAML presets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import llmplan.topology.discover as discover
from llmplan.errors import LlmplanError
from llmplan.topology import gpu_nodes, load_topology

TOPO = """\
\tGPU0\tGPU1\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID
GPU0\t X \tNV4\tPHB\t0-15\t0\t\tN/A
GPU1\tNV4\t X \tPHB\t0-15\t0\t\tN/A
NIC0\tPHB\tPHB\t X \t\t\t\t

NIC Legend:

  NIC0: mlx5_0
"""
QUERY = """\
0, NVIDIA GeForce RTX 3090, 24576, 350.00, 00000000:01:00.0
1, NVIDIA GeForce RTX 3090, 24576, 200.00, 00000000:21:00.0
"""


def _fake_smi(tmp_path: Path, topo: str = TOPO, query: str = QUERY, rc: int = 0) -> Path:
    (tmp_path / "topo.txt").write_text(topo)
    (tmp_path / "query.txt").write_text(query)
    exe = tmp_path / "nvidia-smi"
    exe.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "topo" ]; then cat "{tmp_path}/topo.txt"; else cat "{tmp_path}/query.txt"; fi\n'
        f"exit {rc}\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return tmp_path


def test_smi_source_runs_nvidia_smi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")
    G = load_topology("smi")
    assert G.graph["source"] == "smi" and gpu_nodes(G) == ["GPU0", "GPU1"]
    assert G.nodes["GPU1"]["pci_bus_id"] == "00000000:21:00.0" and G.nodes["GPU1"]["power_limit_w"] == 200.0
    assert G.edges["GPU0", "GPU1"]["bandwidth_gbps"] == 48.0  # NV4 on GA102: 4 x 12
    assert G.nodes["NIC0"]["name"] == "mlx5_0" and G.edges["GPU1", "NIC0"]["link"] == "PHB"


def test_auto_falls_back_to_nvidia_smi_when_nvml_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{_fake_smi(tmp_path)}{os.pathsep}{os.environ['PATH']}")

    def no_nvml():
        raise LlmplanError("NVML is not available (NVMLError_LibraryNotFound)")

    monkeypatch.setattr(discover, "_from_nvml", no_nvml)
    G = load_topology("auto")
    assert G.graph["source"] == "smi" and G.nodes["GPU0"]["model"] == "RTX-3090"


def test_failing_nvidia_smi_is_reported(tmp_path, monkeypatch):
    fake = _fake_smi(tmp_path, topo="NVIDIA-SMI has failed", rc=9)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LlmplanError, match="exited 9: NVIDIA-SMI has failed"):
        load_topology("smi")


def test_query_and_matrix_disagree_on_gpu_count(tmp_path, monkeypatch):
    fake = _fake_smi(tmp_path, query=QUERY.splitlines()[0] + "\n")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(LlmplanError, match="indices 0..n-1|2 GPUs but 1"):
        load_topology("smi")


def test_user_yaml_preset_and_composition(tmp_path):
    box = tmp_path / "box.yaml"
    box.write_text(
        "name: my-box\n"
        "gpus:\n  - {name: NVIDIA L4, count: 2, power_limit_w: 72}\n"
        "topo: |2\n        GPU0    GPU1    CPU Affinity    NUMA Affinity\n"
        "  GPU0     X      PXB     0-7     0\n  GPU1    PXB      X      0-7     0\n"
    )
    G = load_topology(f"file:{box}")
    assert G.graph == {"name": "my-box", "source": f"file:{box}"}
    assert G.edges["GPU0", "GPU1"]["link"] == "PXB" and G.nodes["GPU1"]["model"] == "L4"
    comp = tmp_path / "cluster.yaml"
    comp.write_text("name: c\ncompose: {node: 4x-rtx3090, count: 3, net: {bandwidth_gbps: 25}}\n")
    C = load_topology(f"file:{comp}")
    assert len(gpu_nodes(C)) == 12 and C.edges["GPU0", "GPU4"]["bandwidth_gbps"] == 25.0
    assert C.nodes["GPU7"]["power_limit_w"] == 150.0 and C.nodes["GPU7"]["host"] == "node1"


@pytest.mark.parametrize(
    "body,msg",
    [
        ("name: x\ngpus: [{name: NVIDIA L4}]\n", "needs `gpus` and `topo`"),
        ("compose: {node: dgx-h100}\n", "`compose` needs"),
        ("name: x\ngpus: [{name: NVIDIA L4, colour: red}]\ntopo: 'GPU0\n'\n", "keys from"),
        ("gpus: [\n", "not valid YAML"),
        (
            "name: x\ngpus: [{name: NVIDIA L4}]\ntopo: |\n  GPU0 GPU1\n  GPU0 X PIX\n  GPU1 PIX X\n",
            "1 GPU descriptions",
        ),
    ],
)
def test_bad_user_yaml(tmp_path, body, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(body)
    with pytest.raises(LlmplanError, match=msg):
        load_topology(f"file:{f}")
