"""Presets, power caps, the spec table and the JSON round trip (property test)."""

from __future__ import annotations

import json
import time
import warnings

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmplan.errors import LlmplanError
from llmplan.topology import gpu_nodes, load_topology, preset_names
from llmplan.topology.graph import EDGE_ATTRS, GPU_ATTRS, GpuRecord, HostLayout, build_graph, compute_scale
from llmplan.topology.serialize import dumps, loads
from llmplan.topology.specs import GPU_SPECS, UNKNOWN, UnknownGpuWarning, match_model, spec_for


def test_uellm_testbed_preset():
    G = load_topology("preset:4x-rtx3090")
    assert gpu_nodes(G) == ["GPU0", "GPU1", "GPU2", "GPU3"]
    assert G.graph == {"name": "4x-rtx3090", "source": "preset:4x-rtx3090"}
    assert [G.nodes[n]["power_limit_w"] for n in gpu_nodes(G)] == [350.0, 300.0, 250.0, 150.0]
    tflops = [G.nodes[n]["bf16_tflops"] for n in gpu_nodes(G)]
    assert tflops[0] == 71.0 and tflops == sorted(tflops, reverse=True)
    assert tflops[3] == pytest.approx(71.0 * (150 / 350) ** (1 / 3), rel=1e-4)
    links = {(u, v): d["link"] for u, v, d in G.edges(data=True)}
    assert links[("GPU0", "GPU1")] == "PIX" and links[("GPU2", "GPU3")] == "PIX"
    assert sorted(links.values()) == ["NODE"] * 4 + ["PIX"] * 2


def test_single_machine_presets():
    G = load_topology("preset:dgx-h100")
    assert len(gpu_nodes(G)) == 8 and G.edges["GPU3", "GPU4"]["link"] == "NV18"
    assert G.edges["GPU3", "GPU4"]["bandwidth_gbps"] == pytest.approx(18 * 20.6)
    assert G.edges["GPU5", "NIC5"]["link"] == "PIX" and G.nodes["NIC5"]["name"] == "mlx5_5"
    A = load_topology("preset:dgx-a100")
    assert A.edges["GPU0", "GPU7"]["link"] == "NV12" and A.nodes["GPU4"]["numa_node"] == 7
    P = load_topology("preset:8x-a100-pcie")
    assert P.edges["GPU0", "GPU1"]["link"] == "PIX" and P.edges["GPU0", "GPU7"]["link"] == "SYS"
    R = load_topology("preset:2x-rtx4090")
    assert R.nodes["GPU1"]["model"] == "RTX-4090" and R.edges["GPU0", "GPU1"]["link"] == "PHB"
    H = load_topology("preset:hetero-a100-l40s")
    assert [H.nodes[n]["model"] for n in gpu_nodes(H)] == ["A100-PCIe-80GB"] * 2 + ["L40S"] * 2
    assert H.edges["GPU0", "GPU1"]["link"] == "NV12" and H.edges["GPU1", "GPU2"]["link"] == "SYS"


@pytest.mark.parametrize("n_nodes", [8, 32, 64])
def test_composed_multinode_presets(n_nodes):
    t = time.perf_counter()
    G = load_topology(f"preset:dgx-h100-x{n_nodes}")
    elapsed = time.perf_counter() - t
    n = 8 * n_nodes
    gpus = gpu_nodes(G)
    assert len(gpus) == n and gpus[-1] == f"GPU{n - 1}"
    gpu_edges = [d for u, v, d in G.edges(data=True) if u.startswith("GPU") and v.startswith("GPU")]
    assert len(gpu_edges) == n * (n - 1) // 2
    assert sum(d["link"] == "NET" for d in gpu_edges) == n * (n - 1) // 2 - n_nodes * 28
    assert G.edges["GPU7", "GPU8"] == {"link": "NET", "nvlinks": 0, "bandwidth_gbps": 50.0, "latency_us": 5.0}
    assert G.edges["GPU8", "GPU15"]["link"] == "NV18"
    assert G.nodes[f"GPU{n - 1}"]["host"] == f"node{n_nodes - 1}"
    assert not G.has_edge("GPU0", "NIC8")  # NICs connect to their own host's GPUs only
    assert elapsed < 5.0  # ~0.4 s for 512 GPUs on an idle core; this only catches a gross regression


def test_unknown_preset_and_source():
    with pytest.raises(LlmplanError, match="available: .*dgx-h100"):
        load_topology("preset:dgx-z9000")
    with pytest.raises(LlmplanError, match="auto, nvml, smi, file:PATH or preset:NAME"):
        load_topology("cloud")
    with pytest.raises(LlmplanError, match="does not exist"):
        load_topology("file:/nonexistent/topo.txt")


def test_auto_without_gpu_names_presets_and_file(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    import llmplan.topology.discover as d

    def no_nvml():
        raise LlmplanError("NVML is not available (NVMLError_LibraryNotFound)")

    monkeypatch.setattr(d, "_from_nvml", no_nvml)
    with pytest.raises(LlmplanError) as exc:
        load_topology("auto")
    msg = str(exc.value)
    assert "\n" not in msg and "preset:NAME" in msg and "dgx-h100" in msg and "file:PATH" in msg
    assert "nvidia-smi is not on PATH" in msg


def test_compute_scale_cube_root_law():
    assert compute_scale(None, 350) == 1.0 and compute_scale(300, None) == 1.0
    assert compute_scale(500, 400) == 1.0  # above TDP: spec value
    assert compute_scale(175, 350) == pytest.approx(0.5 ** (1 / 3))


def test_power_caps_on_any_source():
    G = load_topology("preset:dgx-h100", power_caps={0: 350, 7: 700})
    assert G.nodes["GPU0"]["power_limit_w"] == 350.0
    assert G.nodes["GPU0"]["bf16_tflops"] == pytest.approx(989.4 * 0.5 ** (1 / 3), rel=1e-4)
    assert G.nodes["GPU7"]["compute_scale"] == 1.0 and G.nodes["GPU1"]["bf16_tflops"] == 989.4
    # caps re-applied to a JSON export scale from the uncapped base, not from the already-capped value
    H = loads(dumps(load_topology("preset:4x-rtx3090")))
    from llmplan.topology.graph import apply_power_caps

    apply_power_caps(H, {3: 350})
    assert H.nodes["GPU3"]["bf16_tflops"] == pytest.approx(71.0, rel=1e-4)
    with pytest.raises(LlmplanError, match="GPU0..GPU3"):
        load_topology("preset:4x-rtx3090", power_caps={9: 100})
    with pytest.raises(LlmplanError, match="positive"):
        load_topology("preset:4x-rtx3090", power_caps={0: 0})
    with pytest.warns(UserWarning, match="above the 350 W TDP"):
        load_topology("preset:4x-rtx3090", power_caps={0: 400})


def test_power_cap_needs_a_known_tdp(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("\tGPU0\tGPU1\nGPU0\t X \tPIX\nGPU1\tPIX\t X \n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnknownGpuWarning)
        with pytest.raises(LlmplanError, match="--gpu-model"):
            load_topology(f"file:{f}", power_caps={0: 100})
    G = load_topology(f"file:{f}", power_caps={0: 36}, gpu_model="L4")
    assert G.nodes["GPU0"]["power_limit_w"] == 36.0
    assert G.nodes["GPU0"]["compute_scale"] == pytest.approx(0.5 ** (1 / 3), abs=1e-6)


def test_topo_file_with_query_gpu_lines(tmp_path):
    f = tmp_path / "box.txt"
    f.write_text(
        "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\n"
        "GPU0\t X \tNV12\t0-23\t0\nGPU1\tNV12\t X \t0-23\t0\n\n"
        "0, NVIDIA A100-SXM4-40GB, 40960, 250.00, 00000000:07:00.0\n"
        "1, NVIDIA A100-SXM4-40GB, 40960, 400.00, 00000000:0F:00.0\n"
    )
    G = load_topology(f"file:{f}")
    g0 = G.nodes["GPU0"]
    assert (
        g0["model"] == "A100-SXM-40GB" and g0["memory_gib"] == 40.0 and g0["pci_bus_id"] == "00000000:07:00.0"
    )
    assert g0["compute_scale"] == pytest.approx((250 / 400) ** (1 / 3), abs=1e-6)
    assert G.nodes["GPU1"]["compute_scale"] == 1.0


@pytest.mark.parametrize(
    "name,model",
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA H100 NVL", "H100-NVL"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA H20", "H20"),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-SXM-40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100-PCIe-40GB"),
        ("NVIDIA A100 80GB PCIe", "A100-PCIe-80GB"),
        ("NVIDIA A800-SXM4-80GB", "A800-SXM-80GB"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA L40", "L40"),
        ("NVIDIA A40", "A40"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA L4", "L4"),
        ("Tesla V100-SXM2-16GB", "V100-SXM2-16GB"),
        ("Tesla V100-SXM2-32GB", "V100-SXM2-32GB"),
        ("Tesla V100-PCIE-16GB", "V100-PCIe"),
        ("Tesla P100-PCIE-16GB", "P100-PCIe"),
        ("Tesla T4", "T4"),
        ("NVIDIA GeForce RTX 3090", "RTX-3090"),
        ("NVIDIA GeForce RTX 4090", "RTX-4090"),
        ("NVIDIA RTX A6000", "RTX-A6000"),
        ("NVIDIA RTX 6000 Ada Generation", "RTX-6000-Ada"),
        ("AMD Instinct MI210", "MI210"),
        ("rtx 3090", "RTX-3090"),
    ],
)
def test_reported_names_match_spec_models(name, model):
    assert match_model(name) == model


def test_unknown_model_warns_and_gets_conservative_defaults():
    with pytest.warns(UnknownGpuWarning, match="not in llmplan's spec table"):
        spec = spec_for("NVIDIA Quantum Accelerator 9000")
    assert spec is UNKNOWN
    assert all(
        spec.bf16_tflops <= s.bf16_tflops or s.model in ("P100-PCIe", "P100-SXM2") for s in GPU_SPECS.values()
    )
    with pytest.raises(LlmplanError, match="not in the spec table"):
        load_topology("preset:4x-rtx3090", gpu_model="TPU-v5")


# ---- property test: random topologies -> JSON -> load -> identical graph --------------------------------

_NAMES = [
    *(
        s
        for s in (
            "NVIDIA H100 80GB HBM3",
            "NVIDIA A100-SXM4-80GB",
            "NVIDIA L40S",
            "Tesla V100-SXM2-16GB",
            "NVIDIA GeForce RTX 3090",
            "NVIDIA H20",
        )
    ),
    "Mystery GPU X1",
]
_CELLS = st.one_of(
    st.sampled_from(["PIX", "PXB", "PHB", "NODE", "SYS"]), st.integers(1, 18).map(lambda n: f"NV{n}")
)
_OPT_INT = st.one_of(st.none(), st.integers(0, 7))


@st.composite
def _hosts(draw):
    hosts = []
    for h in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 5))
        gpus = [
            GpuRecord(
                name=draw(st.sampled_from(_NAMES)),
                memory_gib=draw(st.one_of(st.none(), st.floats(1, 200, allow_nan=False))),
                power_limit_w=draw(st.one_of(st.none(), st.floats(50, 800, allow_nan=False))),
                numa_node=draw(_OPT_INT),
                cpu_affinity=draw(st.one_of(st.none(), st.sampled_from(["0-23", "0-23,48-71", "1"]))),
                pci_bus_id=draw(st.one_of(st.none(), st.just(f"00000000:{h:02X}:{0:02X}.0"))),
                pcie_gen=draw(st.one_of(st.none(), st.integers(3, 5))),
            )
            for _ in range(n)
        ]
        links = {(i, j): draw(_CELLS) for i in range(n) for j in range(i + 1, n)}
        nics = [f"mlx5_{k}" for k in range(draw(st.integers(0, 2)))]
        nic_links = {
            (i, k): draw(st.sampled_from(["PIX", "PXB", "NODE", "SYS"]))
            for i in range(n)
            for k in range(len(nics))
        }
        hosts.append(
            HostLayout(gpus=gpus, gpu_links=links, nics=nics, gpu_nic_links=nic_links, host=f"node{h}")
        )
    return hosts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hosts=_hosts(), caps=st.dictionaries(st.integers(0, 0), st.floats(60, 900, allow_nan=False), max_size=1)
)
def test_json_round_trip_is_identical(hosts, caps, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        capped = caps if caps and match_model(hosts[0].gpus[0].name) else None  # a cap needs a known TDP
        G = build_graph(hosts, name="random", source="test", power_caps=capped)
        path = tmp_path_factory.mktemp("rt") / "t.json"
        path.write_text(dumps(G))
        H = load_topology(f"file:{path}")
    assert nx.utils.graphs_equal(G, H)
    for n, d in G.nodes(data=True):
        assert H.nodes[n] == d and (d["kind"] != "gpu" or set(d) == set(GPU_ATTRS))
    for u, v, d in G.edges(data=True):
        assert H.edges[u, v] == d and set(d) == set(EDGE_ATTRS)
    assert json.loads(path.read_text())["version"] == 1


def test_every_preset_round_trips_through_json():
    for name in preset_names():
        if name.endswith(("x32", "x64")):
            continue  # same code path as x8, only bigger
        G = load_topology(f"preset:{name}")
        assert nx.utils.graphs_equal(G, loads(dumps(G))), name


def test_json_version_and_schema_errors():
    with pytest.raises(LlmplanError, match="version 2 is not supported"):
        loads(json.dumps({"schema": "llmplan.topology", "version": 2}))
    with pytest.raises(LlmplanError, match="not an llmplan topology export"):
        loads("{}")
    with pytest.raises(LlmplanError, match="missing field"):
        loads(json.dumps({"schema": "llmplan.topology", "version": 1, "gpus": [{"id": "GPU0"}], "links": []}))
