"""Build topology graphs with the schema of llmplan.topology directly (random and hand-made beds)."""

from __future__ import annotations

import networkx as nx

LINKS = {  # kind: (GB/s per direction, latency us)
    "NV12": (300.0, 2.0),
    "PIX": (24.0, 1.0),
    "NODE": (20.0, 3.0),
    "SYS": (12.0, 5.0),
    "NET": (50.0, 8.0),
}


def make_graph(gpus: list[dict], links: dict[tuple[int, int], str], name: str = "test") -> nx.Graph:
    G = nx.Graph(name=name)
    for i, g in enumerate(gpus):
        G.add_node(
            f"GPU{i}",
            kind="gpu",
            index=i,
            name=g.get("name", "TestGPU"),
            model=g.get("name", "TestGPU"),
            memory_gib=g["memory_gib"],
            bf16_tflops=g["bf16_tflops"],
            hbm_gbps=g["hbm_gbps"],
            host=g.get("host", "node0"),
        )
    for i in range(len(gpus)):
        for j in range(i + 1, len(gpus)):
            kind = links.get((i, j)) or links.get((j, i)) or "SYS"
            bw, lat = LINKS[kind]
            G.add_edge(f"GPU{i}", f"GPU{j}", link=kind, nvlinks=0, bandwidth_gbps=bw, latency_us=lat)
    return G
