"""``--json`` (schema ``llmplan.topology`` version 1, loads back to the same graph) and ``--graphml``.

Schema (docs/topology.md has the field table)::

    {"schema": "llmplan.topology", "version": 1, "name": str, "source": str,
     "gpus":  [{"id": "GPU0", <every GPU attribute of the graph except kind>}],
     "nics":  [{"id": "NIC0", "name": "mlx5_0", "host": "node0"}],
     "links": [{"a": "GPU0", "b": "GPU1", "link": "NV18", "nvlinks": 18,
                "bandwidth_gbps": 370.8, "latency_us": 0.6}]}

``source`` keeps the provenance of the original discovery (``preset:dgx-h100``, ``nvml``), so reloading
an export reproduces ``G.graph`` exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

from llmplan.errors import LlmplanError
from llmplan.topology.graph import EDGE_ATTRS, GPU_ATTRS, GPU_OPTIONAL, NIC_ATTRS, gpu_nodes, nic_nodes

SCHEMA = "llmplan.topology"
VERSION = 1


def to_dict(G: nx.Graph) -> dict[str, Any]:
    gpus = gpu_nodes(G)
    nics = nic_nodes(G)
    order = {n: k for k, n in enumerate(gpus + nics)}
    links = []
    for u, v, d in G.edges(data=True):
        a, b = (u, v) if order[u] < order[v] else (v, u)
        links.append({"a": a, "b": b, **{k: d[k] for k in EDGE_ATTRS}})
    links.sort(key=lambda e: (order[e["a"]], order[e["b"]]))
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "name": G.graph.get("name", ""),
        "source": G.graph.get("source", ""),
        "gpus": [{"id": n, **{k: G.nodes[n].get(k) for k in GPU_ATTRS if k != "kind"}} for n in gpus],
        "nics": [{"id": n, **{k: G.nodes[n].get(k) for k in NIC_ATTRS if k != "kind"}} for n in nics],
        "links": links,
    }


def dumps(G: nx.Graph) -> str:
    return json.dumps(to_dict(G), indent=1)


def from_dict(data: Any, where: str = "JSON") -> nx.Graph:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise LlmplanError(
            f'{where}: not an llmplan topology export (missing "schema": "{SCHEMA}"); '
            "write one with `llmplan topology --json`"
        )
    if data.get("version") != VERSION:
        raise LlmplanError(
            f"{where}: topology schema version {data.get('version')!r} is not supported "
            f"(this llmplan reads version {VERSION}); re-export it with this llmplan"
        )
    G = nx.Graph(name=data.get("name", ""), source=data.get("source", ""))
    fix = "re-export it with `llmplan topology --json`"
    for key in ("gpus", "nics", "links"):
        if not isinstance(data.get(key, []), list) or not all(isinstance(x, dict) for x in data.get(key, [])):
            raise LlmplanError(f'{where}: "{key}" must be a list of objects; {fix}')
    try:
        for g in data["gpus"]:
            _new_node(G, g["id"], where)
            G.add_node(
                g["id"],
                kind="gpu",
                **{
                    k: g[k] if k in g or k not in GPU_OPTIONAL else GPU_OPTIONAL[k]
                    for k in GPU_ATTRS
                    if k != "kind"
                },
            )
        for n in data.get("nics", []):
            _new_node(G, n["id"], where)
            G.add_node(n["id"], kind="nic", **{k: n[k] for k in NIC_ATTRS if k != "kind"})
        for e in data["links"]:
            if e["a"] not in G or e["b"] not in G:
                raise LlmplanError(f"{where}: link {e['a']}-{e['b']} names a node that is not listed")
            if e["a"] == e["b"]:
                raise LlmplanError(f"{where}: link {e['a']}-{e['b']} joins a node to itself; {fix}")
            if G.has_edge(e["a"], e["b"]):
                raise LlmplanError(f"{where}: link {e['a']}-{e['b']} is listed twice; keep one")
            G.add_edge(e["a"], e["b"], **{k: e[k] for k in EDGE_ATTRS})
    except (KeyError, TypeError) as exc:
        raise LlmplanError(
            f"{where}: malformed topology export (missing field {exc}); re-export it with "
            "`llmplan topology --json`"
        ) from None
    return G


def _new_node(G: nx.Graph, node: Any, where: str) -> None:
    if not isinstance(node, str) or not node:
        raise LlmplanError(f"{where}: node id {node!r} must be a non-empty string such as 'GPU0'")
    if node in G:
        raise LlmplanError(f"{where}: node id {node} is listed twice; ids must be unique")


def loads(text: str, where: str = "JSON") -> nx.Graph:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmplanError(f"{where}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    return from_dict(data, where)


def write_graphml(G: nx.Graph, path: Path) -> None:
    """GraphML has no null: attributes that are None are left out of the file."""
    H = nx.Graph(**{k: v for k, v in G.graph.items() if v is not None})
    H.add_nodes_from((n, {k: v for k, v in d.items() if v is not None}) for n, d in G.nodes(data=True))
    H.add_edges_from(G.edges(data=True))
    nx.write_graphml(H, path)
