"""PynvmlDevices against a stand-in `pynvml` with the quirks of real bindings, and the real one here."""

from __future__ import annotations

import ctypes
import sys
import types
from types import SimpleNamespace

import pytest

from llmplan.errors import LlmplanError
from llmplan.topology import load_topology
from llmplan.topology.nvml import PynvmlDevices, layout_from_nvml


class NVMLError(Exception):
    pass


def _fake_pynvml(init_fails: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")
    bus = [b"00000000:07:00.0", b"00000000:0F:00.0"]  # old bindings return bytes
    m.NVMLError = NVMLError
    m.NVML_NVLINK_CAP_P2P_SUPPORTED = 0
    m.NVML_P2P_CAPS_INDEX_READ = (0,)  # the stray-comma tuple of real bindings

    def init():
        if init_fails:
            raise NVMLError("NVML Shared Library Not Found")

    def not_supported(*_):
        raise NVMLError("Not Supported")

    def nvlink_state(h, link):
        if link >= 12:  # past the A100's 12 links the real library raises
            raise NVMLError("Invalid Argument")
        return 1

    def nvlink_cap(h, link, cap):
        if not isinstance(cap, int):
            raise ctypes.ArgumentError("argument 3: wrong type")
        return 1

    m.nvmlInit = init
    m.nvmlShutdown = lambda: None
    m.nvmlDeviceGetCount = lambda: 2
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetName = lambda h: b"NVIDIA A100-SXM4-80GB"
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=85899345920)
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 300000 if h else not_supported()
    m.nvmlDeviceGetPciInfo = lambda h: SimpleNamespace(busId=bus[h])
    m.nvmlDeviceGetNumaNodeId = not_supported  # older driver
    m.nvmlDeviceGetCpuAffinity = lambda h, n: [0xFFFF0000FFFF] + [0] * (n - 1)
    m.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 0)
    m.nvmlDeviceGetMaxPcieLinkGeneration = lambda h: 4
    m.nvmlDeviceGetTopologyCommonAncestor = lambda a, b: 40
    m.nvmlDeviceGetNvLinkState = nvlink_state
    m.nvmlDeviceGetNvLinkCapability = nvlink_cap
    m.nvmlDeviceGetNvLinkRemotePciInfo = lambda h, link: SimpleNamespace(busId=bus[1 - h])
    # no nvmlDeviceGetNvLinkRemoteDeviceType: bindings too old to have it
    return m


def test_adapter_survives_failing_calls_and_old_bindings(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    dev = PynvmlDevices()
    layout = layout_from_nvml(dev)
    dev.close()
    assert layout.gpu_links == {(0, 1): "NV12"}  # 12 links to a visible GPU's bus id
    g0, g1 = layout.gpus
    assert g0.name == "NVIDIA A100-SXM4-80GB" and g0.pci_bus_id == "00000000:07:00.0"
    assert g0.power_limit_w is None and g1.power_limit_w == 300.0  # NotSupported -> unknown, not a crash
    assert g0.numa_node is None  # NumaNodeId unsupported and no sysfs entry for the bus id here
    assert g0.cpu_affinity == "0-15,32-47" and g0.memory_gib == 80.0 and g0.pcie_gen == 4


def test_missing_driver_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_fails=True))
    with pytest.raises(LlmplanError, match="NVML is not available .*Library Not Found"):
        PynvmlDevices()


def test_real_nvml_on_this_machine():
    """No GPU here: a clear error. On a GPU machine: a graph with every GPU NVML reports."""
    try:
        G = load_topology("nvml")
    except LlmplanError as exc:
        assert "NVML" in str(exc) and "\n" not in str(exc)
        return
    assert G.graph["source"] == "nvml" and any(d["kind"] == "gpu" for _, d in G.nodes(data=True))
