"""Build the topology graph (the schema other modules code against) and apply power caps.

Sources (topo -m text, nvidia-smi CSV, NVML, presets) are first reduced to :class:`HostLayout`s; one
builder turns those into the networkx graph, so every source yields the same attributes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import networkx as nx

import llmplan.topology.links as L
from llmplan.errors import LlmplanError
from llmplan.topology.specs import GPU_SPECS, UNKNOWN, GpuSpec, UnknownGpuWarning, match_model, spec_for

GPU_ATTRS = (
    "kind",
    "index",
    "name",
    "model",
    "memory_gib",
    "bf16_tflops",
    "fp8_tflops",
    "int8_tops",
    "sm",
    "hbm_gbps",
    "power_limit_w",
    "tdp_w",
    "compute_scale",
    "numa_node",
    "cpu_affinity",
    "pci_bus_id",
    "host",
)
# Attributes a topology file written before they existed may lack: no FP8/INT8 tensor path assumed.
GPU_OPTIONAL = {"fp8_tflops": 0.0, "int8_tops": 0.0, "sm": 80}
NIC_ATTRS = ("kind", "name", "host")
EDGE_ATTRS = ("link", "nvlinks", "bandwidth_gbps", "latency_us")


@dataclass
class GpuRecord:
    """One GPU as a source reports it; None means "not reported", the spec table fills it in."""

    name: str | None = None
    memory_gib: float | None = None
    power_limit_w: float | None = None
    numa_node: int | None = None
    cpu_affinity: str | None = None
    pci_bus_id: str | None = None
    pcie_gen: int | None = None


@dataclass
class HostLayout:
    """One machine: its GPUs (in index order), NICs, and the link cell of every GPU pair / GPU-NIC pair."""

    gpus: list[GpuRecord]
    gpu_links: dict[tuple[int, int], str]  # (i, j), i < j, local indices -> "NV18" / "PIX"
    nics: list[str] = field(default_factory=list)
    gpu_nic_links: dict[tuple[int, int], str] = field(default_factory=dict)  # (gpu, nic) -> "PIX"
    host: str = "node0"


@dataclass(frozen=True)
class NetLink:
    """The inter-host link every cross-host GPU pair gets (one NIC rail per GPU)."""

    bandwidth_gbps: float = L.NET_BANDWIDTH_GBPS
    latency_us: float = L.NET_LATENCY_US


def compute_scale(power_limit_w: float | None, tdp_w: float | None) -> float:
    """Compute throughput under a power cap, relative to the uncapped part: ``min(1, (cap/TDP)**(1/3))``.

    Dynamic power is ``C V^2 f`` and across the DVFS range voltage tracks frequency, so power grows
    ~``f^3`` and the clock a cap allows grows ~``cap^(1/3)``. This is why capping costs far less
    throughput than it saves power (an RTX 3090 at 150/350 W keeps ~75% of its clock, not 43%). Caps at or
    above TDP change nothing (spec TFLOP/s are boost-clock figures). Memory bandwidth is not scaled: the
    memory clock is not what a board-power cap throttles first.
    """
    if power_limit_w is None or tdp_w is None or tdp_w <= 0:
        return 1.0
    return min(1.0, (max(power_limit_w, 0.0) / tdp_w) ** (1.0 / 3.0))


def _parse_cell(cell: str) -> tuple[str, int]:
    parsed = L.parse_cell(cell)
    if parsed is None:
        raise LlmplanError(f"link {cell!r} is not one of NV<n>, PIX, PXB, PHB, NODE, SYS, NET")
    return parsed


class _SpecCache:
    """Resolve names to specs once per build, warning once per unknown name."""

    def __init__(self, gpu_model: str | None) -> None:
        self.forced: GpuSpec | None = None
        if gpu_model is not None:
            model = match_model(gpu_model)
            if model is None:
                known = ", ".join(GPU_SPECS)
                raise LlmplanError(f"--gpu-model {gpu_model!r} is not in the spec table; use one of {known}")
            self.forced = GPU_SPECS[model]
        self.cache: dict[str | None, GpuSpec] = {}

    def __call__(self, name: str | None) -> GpuSpec:
        if self.forced is not None:
            return self.forced
        if name not in self.cache:
            self.cache[name] = spec_for(name)
        return self.cache[name]


def _gpu_attrs(rec: GpuRecord, spec: GpuSpec, index: int, host: str) -> dict:
    name = rec.name or spec.model
    limit = None if rec.power_limit_w is None else float(rec.power_limit_w)
    scale = compute_scale(limit, spec.tdp_w)
    mem = rec.memory_gib if rec.memory_gib is not None else spec.memory_gib
    return {
        "kind": "gpu",
        "index": index,
        "name": name,
        "model": spec.model,
        "memory_gib": round(float(mem), 3),
        "bf16_tflops": round(spec.bf16_tflops * scale, 4),
        "fp8_tflops": round(spec.fp8_tflops * scale, 4),
        "int8_tops": round(spec.int8_tops * scale, 4),
        "sm": spec.sm,
        "hbm_gbps": spec.hbm_gbps,
        "power_limit_w": limit,
        "tdp_w": spec.tdp_w,
        "compute_scale": round(scale, 6),
        "numa_node": rec.numa_node,
        "cpu_affinity": rec.cpu_affinity,
        "pci_bus_id": rec.pci_bus_id,
        "host": host,
    }


def _edge(cell: str, sa: GpuSpec, sb: GpuSpec, ga: int | None, gb: int | None) -> dict:
    kind, nv = _parse_cell(cell)
    pcie = min(g for g in (ga or sa.pcie_gen, gb or sb.pcie_gen))
    link = L.estimate(kind, nv, nvlink_gen=L.slower_nvlink_gen(sa.nvlink_gen, sb.nvlink_gen), pcie_gen=pcie)
    return {
        "link": link.link,
        "nvlinks": link.nvlinks,
        "bandwidth_gbps": link.bandwidth_gbps,
        "latency_us": link.latency_us,
    }


def _host_edges(host: HostLayout, hspecs: list[GpuSpec]) -> list[tuple[int, int, bool, tuple]]:
    n = len(host.gpus)
    edges: list[tuple[int, int, bool, tuple]] = []
    for i in range(n):
        for j in range(i + 1, n):
            cell = host.gpu_links.get((i, j))
            if cell is None:
                raise LlmplanError(f"host {host.host}: no link given for GPU{i}-GPU{j}")
            d = _edge(cell, hspecs[i], hspecs[j], host.gpus[i].pcie_gen, host.gpus[j].pcie_gen)
            edges.append((i, j, False, tuple(d.values())))
    for (i, k), cell in sorted(host.gpu_nic_links.items()):
        # the NIC's own PCIe generation is not reported: the GPU side's link is assumed to be the limit
        d = _edge(cell, hspecs[i], hspecs[i], host.gpus[i].pcie_gen, host.gpus[i].pcie_gen)
        edges.append((i, k, True, tuple(d.values())))
    return edges


def build_graph(
    hosts: list[HostLayout],
    *,
    name: str,
    source: str,
    net: NetLink | None = None,
    gpu_model: str | None = None,
    power_caps: dict[int, float] | None = None,
) -> nx.Graph:
    """The topology graph: GPU and NIC nodes, an edge for every GPU pair and every same-host GPU-NIC pair.

    Hosts that are identical (a composed multi-node preset) share the per-host edge computation, so a
    512-GPU graph is mostly ``add_edges_from`` over precomputed attribute tuples.
    """
    specs = _SpecCache(gpu_model)
    net = net or NetLink()
    G = nx.Graph(name=name, source=source)
    gpu_ids: list[str] = []
    # Per-host edge attributes depend only on the link cells and the GPUs' specs: identical hosts (a
    # composed cluster) compute them once. Entries: (local a, local b or NIC position, is_nic, attr tuple).
    local_edges_cache: dict[tuple, list[tuple[int, int, bool, tuple]]] = {}
    nic_base = 0
    for host in hosts:
        base = len(gpu_ids)
        hspecs = [specs(r.name) for r in host.gpus]
        for k, (rec, spec) in enumerate(zip(host.gpus, hspecs, strict=True)):
            gid = f"GPU{base + k}"
            gpu_ids.append(gid)
            G.add_node(gid, **_gpu_attrs(rec, spec, base + k, host.host))
        nic_ids = [f"NIC{nic_base + k}" for k in range(len(host.nics))]
        G.add_nodes_from(
            (nid, {"kind": "nic", "name": nic, "host": host.host})
            for nid, nic in zip(nic_ids, host.nics, strict=True)
        )
        key = (id(host.gpu_links), id(host.gpu_nic_links), tuple((r.name, r.pcie_gen) for r in host.gpus))
        if key not in local_edges_cache:
            local_edges_cache[key] = _host_edges(host, hspecs)
        G.add_edges_from(
            (
                gpu_ids[base + a],
                nic_ids[b] if is_nic else gpu_ids[base + b],
                dict(zip(EDGE_ATTRS, v, strict=True)),
            )
            for a, b, is_nic, v in local_edges_cache[key]
        )
        nic_base += len(host.nics)
    if len(hosts) > 1:
        # Nearly all edges of a cluster are NET edges with identical attributes: hand networkx bare pairs
        # plus one attribute set (it still gives each edge its own dict), the cheapest public path.
        bounds = []
        base = 0
        for host in hosts:
            bounds.append(base + len(host.gpus))
            base += len(host.gpus)
        G.add_edges_from(
            (
                (gpu_ids[a], gpu_ids[b])
                for a in range(len(gpu_ids))
                for b in range(next(x for x in bounds if x > a), len(gpu_ids))
            ),
            link="NET",
            nvlinks=0,
            bandwidth_gbps=net.bandwidth_gbps,
            latency_us=net.latency_us,
        )
    if power_caps:
        apply_power_caps(G, power_caps)
    return G


# A cluster beyond this many GPUs is a typo (count: 1000000000), not a plan: refused before building
# (the graph has an edge per GPU pair; 2048 GPUs is ~2M edges, 4x the largest preset).
MAX_GPUS = 2048


# Far above and below any real part (an H200 has 141 GiB, 4.8 TB/s, 989 TFLOP/s, 700 W), far inside
# what the planner's arithmetic can hold: a 1e300 GiB or 1e-300 TFLOP/s GPU is a typo, not hardware.
_FLOOR = {
    "memory_gib": 1e-3, "bf16_tflops": 1e-3, "hbm_gbps": 1e-3, "power_limit_w": 1.0, "tdp_w": 1.0,
    "bandwidth_gbps": 1e-3,
}  # fmt: skip
_CEILING = {
    "memory_gib": 1e6, "bf16_tflops": 1e6, "hbm_gbps": 1e6, "power_limit_w": 1e5, "tdp_w": 1e5,
    "bandwidth_gbps": 1e6, "latency_us": 1e9,
}  # fmt: skip


def validate_graph(G: nx.Graph, where: str) -> nx.Graph:
    """Refuse a topology the planner cannot price: every GPU needs a positive finite memory, compute,
    HBM bandwidth (and power limit/TDP when given), a unique whole index; every link a positive finite
    bandwidth and a finite latency >= 0. ``where`` names the source in the message."""
    from llmplan.validate import integer, number

    fix = "fix the topology file (or re-export it with `llmplan topology --json`)"
    gpus = [n for n, d in G.nodes(data=True) if d.get("kind") == "gpu"]
    if not gpus:
        raise LlmplanError(f"{where}: the topology has no GPUs; {fix}")
    seen: dict[int, str] = {}
    for n in gpus:
        d = G.nodes[n]
        if not isinstance(n, str) or not n:
            raise LlmplanError(f"{where}: GPU id {n!r} must be a non-empty string such as 'GPU0'; {fix}")
        idx = integer(d.get("index"), f"{where}: {n}.index", lo=0, hi=MAX_GPUS, fix=fix)
        if idx in seen:
            raise LlmplanError(f"{where}: {seen[idx]} and {n} both have index {idx}; indices must be unique")
        seen[idx] = n
        for key in ("memory_gib", "bf16_tflops", "hbm_gbps"):
            number(d.get(key), f"{where}: {n}.{key}", lo=_FLOOR[key], hi=_CEILING[key], fix=fix)
        for key in ("power_limit_w", "tdp_w"):
            if d.get(key) is not None:
                number(d.get(key), f"{where}: {n}.{key}", lo=_FLOOR[key], hi=_CEILING[key], fix=fix)
        if d.get("compute_scale") is not None:
            number(d["compute_scale"], f"{where}: {n}.compute_scale", lo=0, hi=1, lo_open=True, fix=fix)
    ordered = sorted(gpus, key=lambda n: G.nodes[n]["index"])
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if not G.has_edge(a, b):
                raise LlmplanError(f"{where}: no link between {a} and {b}; every GPU pair needs one ({fix})")
    for u, v, d in G.edges(data=True):
        number(d.get("bandwidth_gbps"), f"{where}: link {u}-{v} bandwidth_gbps", lo=_FLOOR["bandwidth_gbps"],
               hi=_CEILING["bandwidth_gbps"], fix=fix)  # fmt: skip
        number(d.get("latency_us"), f"{where}: link {u}-{v} latency_us", lo=0,
               hi=_CEILING["latency_us"], fix=fix)  # fmt: skip
    return G


def gpu_nodes(G: nx.Graph) -> list[str]:
    """GPU node ids sorted by index (``GPU2`` before ``GPU10``)."""
    return sorted(
        (n for n, d in G.nodes(data=True) if d.get("kind") == "gpu"), key=lambda n: G.nodes[n]["index"]
    )


def nic_nodes(G: nx.Graph) -> list[str]:
    return sorted((n for n, d in G.nodes(data=True) if d.get("kind") == "nic"), key=lambda n: int(n[3:]))


def apply_power_caps(G: nx.Graph, caps: dict[int, float]) -> None:
    """Set ``power_limit_w`` and rescale ``bf16_tflops`` by :func:`compute_scale` for the capped GPUs."""
    for index, watts in caps.items():
        node = f"GPU{index}"
        if node not in G or G.nodes[node].get("kind") != "gpu":
            have = len(gpu_nodes(G))
            raise LlmplanError(f"--power-cap names GPU{index} but the topology has GPU0..GPU{have - 1}")
        if not (watts > 0 and watts < float("inf")):
            raise LlmplanError(
                f"--power-cap {index}={watts}: the cap must be a positive, finite number of watts"
            )
        d = G.nodes[node]
        if d.get("tdp_w") is None:
            raise LlmplanError(
                f"--power-cap GPU{index}: model {d.get('model')!r} has no known TDP to scale "
                "against; pass --gpu-model with a known model"
            )
        base = d["bf16_tflops"] / d["compute_scale"] if d["compute_scale"] > 0 else 0.0
        scale = compute_scale(float(watts), d["tdp_w"])
        if float(watts) > d["tdp_w"]:
            warnings.warn(
                f"--power-cap GPU{index}={watts:g} W is above the {d['tdp_w']:g} W TDP; "
                "compute stays at its spec value",
                UserWarning,
                stacklevel=2,
            )
        old = d["compute_scale"]
        for key in ("fp8_tflops", "int8_tops"):  # the same clock scaling for every tensor precision
            if d.get(key) and old > 0:
                d[key] = round(d[key] / old * scale, 4)
        d.update(
            power_limit_w=float(watts), compute_scale=round(scale, 6), bf16_tflops=round(base * scale, 4)
        )


__all__ = [
    "GpuRecord",
    "HostLayout",
    "NetLink",
    "build_graph",
    "gpu_nodes",
    "nic_nodes",
    "apply_power_caps",
    "compute_scale",
    "validate_graph",
    "MAX_GPUS",
    "UNKNOWN",
    "UnknownGpuWarning",
]
