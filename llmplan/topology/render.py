"""Rich rendering of a topology graph: a GPU table and an nvidia-smi-style link matrix with bandwidths."""

from __future__ import annotations

from collections import Counter

import networkx as nx
from rich import box
from rich.console import Console, Group
from rich.table import Table

from llmplan.topology.graph import gpu_nodes, nic_nodes

# Beyond this many GPUs a full matrix stops being readable: show one host's matrix and a summary instead.
MATRIX_MAX_GPUS = 16
_STYLE = {"NET": "magenta", "SYS": "red", "NODE": "yellow", "PHB": "yellow", "PXB": "cyan", "PIX": "cyan"}


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{x:g}{unit}"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)


def _bw(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:g}"


def gpu_table(G: nx.Graph, gpus: list[str]) -> Table:
    t = _table(f"{G.graph.get('name', '')}: {len(gpu_nodes(G))} GPUs (source {G.graph.get('source')})")
    for col, just in (
        ("GPU", "left"),
        ("name", "left"),
        ("model", "left"),
        ("GiB", "right"),
        ("bf16 TFLOP/s", "right"),
        ("HBM GB/s", "right"),
        ("power/TDP W", "right"),
        ("NUMA", "right"),
        ("CPU affinity", "left"),
        ("host", "left"),
    ):
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for n in gpus:
        d = G.nodes[n]
        scale = d["compute_scale"]
        tflops = f"{d['bf16_tflops']:.1f}" + (f" (x{scale:.2f})" if scale < 1.0 else "")
        power = f"{_fmt(d['power_limit_w'])}/{_fmt(d['tdp_w'])}"
        t.add_row(
            n,
            d["name"],
            d["model"],
            f"{d['memory_gib']:.1f}",
            tflops,
            f"{d['hbm_gbps']:g}",
            power,
            _fmt(d["numa_node"]),
            d["cpu_affinity"] or "-",
            d["host"],
        )
    return t


def link_matrix(G: nx.Graph, gpus: list[str], nics: list[str]) -> Table:
    t = _table("links: type bandwidth (GB/s per direction)")
    t.add_column("")
    for c in gpus + nics:
        t.add_column(c, justify="center", no_wrap=True)
    for r in gpus:
        cells = []
        for c in gpus + nics:
            if c == r:
                cells.append("X")
            elif G.has_edge(r, c):
                e = G.edges[r, c]
                style = "green" if e["nvlinks"] else _STYLE.get(e["link"], "")
                txt = f"{e['link']} {_bw(e['bandwidth_gbps'])}"
                cells.append(f"[{style}]{txt}[/]" if style else txt)
            else:
                cells.append("-")
        t.add_row(r, *cells)
    return t


def link_summary(G: nx.Graph) -> Table:
    counts: Counter[tuple[str, float, float]] = Counter()
    for u, v, e in G.edges(data=True):
        kinds = "GPU-NIC" if G.nodes[u]["kind"] != G.nodes[v]["kind"] else "GPU-GPU"
        counts[(kinds, e["link"], e["bandwidth_gbps"], e["latency_us"])] += 1  # type: ignore[index]
    t = _table("link classes")
    for col in ("pairs", "kind", "link", "GB/s per direction", "latency us"):
        t.add_column(col, justify="right" if col != "link" else "left")
    for (kinds, link, bw, lat), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[0][2])):
        t.add_row(str(n), kinds, link, f"{bw:g}", f"{lat:g}")
    return t


def render(G: nx.Graph, console: Console) -> None:
    gpus = gpu_nodes(G)
    nics = nic_nodes(G)
    if len(gpus) <= MATRIX_MAX_GPUS:
        console.print(Group(gpu_table(G, gpus), link_matrix(G, gpus, nics), link_summary(G)))
        return
    hosts: dict[str, list[str]] = {}
    for n in gpus:
        hosts.setdefault(G.nodes[n]["host"], []).append(n)
    models = Counter(G.nodes[n]["model"] for n in gpus)
    first = next(iter(hosts))
    console.print(
        f"[bold]{G.graph.get('name')}[/]: {len(gpus)} GPUs on {len(hosts)} hosts "
        f"({', '.join(f'{c}x {m}' for m, c in models.items())}), {len(nics)} NICs, "
        f"{G.number_of_edges()} links; showing host {first} (larger than {MATRIX_MAX_GPUS} GPUs "
        "is summarised; --json has everything)"
    )
    local = hosts[first]
    local_nics = [n for n in nics if G.nodes[n]["host"] == first]
    console.print(Group(gpu_table(G, local), link_matrix(G, local, local_nics), link_summary(G)))
