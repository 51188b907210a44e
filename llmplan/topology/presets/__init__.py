"""Presets: YAML files shipped in ``llmplan/topology/presets`` (and any user YAML in the same format).

A preset is either one machine — GPU entries plus the ``nvidia-smi topo -m`` matrix that machine would
print, parsed by the same parser as real output — or a composition of N copies of another preset joined
by ``NET`` links (``compose:``), so a 512-GPU cluster is four lines of YAML::

    name: 4x-rtx3090
    gpus:                       # one entry per GPU; ``count: n`` repeats an entry
      - {name: NVIDIA GeForce RTX 3090, power_limit_w: 350}
    topo: |
      <nvidia-smi topo -m text>

    name: dgx-h100-x8
    compose: {node: dgx-h100, count: 8, net: {bandwidth_gbps: 50, latency_us: 5}}
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from llmplan.errors import LlmplanError
from llmplan.topology.graph import MAX_GPUS, GpuRecord, HostLayout, NetLink
from llmplan.topology.smi import QueryGpu, TopoMatrix, parse_topo_matrix
from llmplan.validate import integer, mapping, number, positive

_GPU_KEYS = {"name", "count", "power_limit_w", "memory_gib", "pci_bus_id", "pcie_gen"}


def preset_names() -> list[str]:
    files = resources.files("llmplan.topology").joinpath("presets")
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".yaml"))


def _read_preset(name: str) -> tuple[dict[str, Any], str]:
    path = resources.files("llmplan.topology").joinpath("presets", f"{name}.yaml")
    if not path.is_file():
        raise LlmplanError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()), f"preset:{name}"


def layout_from_matrix(
    matrix: TopoMatrix, gpus: list[GpuRecord] | None = None, host: str = "node0"
) -> HostLayout:
    """Merge a parsed matrix (links, NUMA/CPU affinity) with per-GPU facts from another source."""
    n = len(matrix.gpus)
    records = gpus if gpus is not None else [GpuRecord() for _ in range(n)]
    if len(records) != n:
        raise LlmplanError(
            f"the topo matrix has {n} GPUs but {len(records)} GPU descriptions were given; "
            "describe every GPU once"
        )
    for rec, tg in zip(records, matrix.gpus, strict=True):
        rec.numa_node = tg.numa_node if rec.numa_node is None else rec.numa_node
        rec.cpu_affinity = tg.cpu_affinity if rec.cpu_affinity is None else rec.cpu_affinity
    return HostLayout(
        gpus=records,
        gpu_links=dict(matrix.gpu_links),
        nics=list(matrix.nics),
        gpu_nic_links=dict(matrix.gpu_nic_links),
        host=host,
    )


def records_from_query(rows: list[QueryGpu]) -> list[GpuRecord]:
    rows = sorted(rows, key=lambda r: r.index)
    if [r.index for r in rows] != list(range(len(rows))):
        raise LlmplanError("nvidia-smi --query-gpu rows must cover indices 0..n-1 once each")
    return [
        GpuRecord(
            name=r.name,
            memory_gib=None if r.memory_mib is None else r.memory_mib / 1024,
            power_limit_w=r.power_limit_w,
            pci_bus_id=r.pci_bus_id,
        )
        for r in rows
    ]


def _gpu_records(spec: Any, where: str) -> list[GpuRecord]:
    entries = spec if isinstance(spec, list) else [spec]
    out: list[GpuRecord] = []
    for e in entries:
        if not isinstance(e, dict) or not set(e) <= _GPU_KEYS:
            raise LlmplanError(
                f"{where}: each `gpus` entry must be a mapping with keys from {sorted(_GPU_KEYS)}, got {e!r}"
            )
        count = integer(e.get("count", 1), f"{where}: gpus.count", lo=1, hi=MAX_GPUS - len(out))
        name = e.get("name")
        if name is not None and not isinstance(name, str):
            raise LlmplanError(
                f"{where}: gpus.name must be text such as 'NVIDIA H100 80GB HBM3' (got {name!r})"
            )
        mem, power, gen = e.get("memory_gib"), e.get("power_limit_w"), e.get("pcie_gen")
        for _ in range(count):
            out.append(
                GpuRecord(
                    name=name,
                    memory_gib=None if mem is None else positive(mem, f"{where}: gpus.memory_gib"),
                    power_limit_w=None if power is None else positive(power, f"{where}: gpus.power_limit_w"),
                    pci_bus_id=None if e.get("pci_bus_id") is None else str(e["pci_bus_id"]),
                    pcie_gen=None if gen is None else integer(gen, f"{where}: gpus.pcie_gen", lo=1, hi=7),
                )
            )
    return out


def layouts_from_spec(data: Any, where: str, _depth: int = 0) -> tuple[list[HostLayout], NetLink | None]:
    """Host layouts for a preset document (``where`` names it in errors)."""
    if not isinstance(data, dict):
        raise LlmplanError(f"{where}: expected a YAML mapping with `gpus` + `topo`, or `compose`")
    if "compose" in data:
        comp = data["compose"]
        if _depth > 3 or not isinstance(comp, dict) or "node" not in comp or "count" not in comp:
            raise LlmplanError(f"{where}: `compose` needs `node: <preset>` and `count: <n>`")
        node_data, node_where = _read_preset(str(comp["node"]))
        node_hosts, _ = layouts_from_spec(node_data, node_where, _depth + 1)
        if len(node_hosts) != 1:
            raise LlmplanError(f"{where}: composed node {comp['node']!r} must be a single machine")
        proto = node_hosts[0]
        count = integer(
            comp["count"], f"{where}: compose.count", lo=1, hi=max(1, MAX_GPUS // max(1, len(proto.gpus))),
            fix=f"a cluster holds at most {MAX_GPUS} GPUs",
        )
        hosts = []
        for h in range(count):
            # Shallow copies share link dicts (read-only) so the builder computes per-host edges once.
            hosts.append(
                HostLayout(
                    gpus=[GpuRecord(**vars(g)) for g in proto.gpus],
                    gpu_links=proto.gpu_links,
                    nics=proto.nics,
                    gpu_nic_links=proto.gpu_nic_links,
                    host=f"node{h}",
                )
            )
        net = mapping(comp.get("net") or {}, f"{where}: compose.net")
        return hosts, NetLink(
            positive(
                net.get("bandwidth_gbps", NetLink.bandwidth_gbps), f"{where}: compose.net.bandwidth_gbps"
            ),
            number(net.get("latency_us", NetLink.latency_us), f"{where}: compose.net.latency_us", lo=0),
        )
    if "gpus" not in data or "topo" not in data:
        raise LlmplanError(f"{where}: a machine preset needs `gpus` and `topo` (the nvidia-smi topo -m text)")
    records = _gpu_records(data["gpus"], where)
    return [layout_from_matrix(parse_topo_matrix(str(data["topo"])), records)], None


def load_preset(name: str) -> tuple[list[HostLayout], NetLink | None, str]:
    data, where = _read_preset(name)
    hosts, net = layouts_from_spec(data, where)
    return hosts, net, str(data.get("name", name))
