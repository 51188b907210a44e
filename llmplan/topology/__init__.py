"""GPU topology discovery into a networkx graph (``llmplan topology``).

Public API (the graph schema is documented in docs/topology.md)::

    from llmplan.topology import load_topology, gpu_nodes
    G = load_topology("preset:dgx-h100", power_caps={0: 500})
    G.nodes["GPU0"]["bf16_tflops"], G.edges["GPU0", "GPU1"]["bandwidth_gbps"]

Submodules load on first use so that importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx


def load_topology(
    source: str, power_caps: dict[int, float] | None = None, *, gpu_model: str | None = None
) -> nx.Graph:
    from llmplan.topology.discover import load_topology as _load

    return _load(source, power_caps, gpu_model=gpu_model)


def discover(source: str = "auto", power_caps: dict[int, float] | None = None, **kw: Any) -> nx.Graph:
    return load_topology(source, power_caps, **kw)


def gpu_nodes(G: nx.Graph) -> list[str]:
    """GPU node ids sorted by index."""
    from llmplan.topology.graph import gpu_nodes as _gpu_nodes

    return _gpu_nodes(G)


def preset_names() -> list[str]:
    from llmplan.topology.presets import preset_names as _names

    return _names()


__all__ = ["load_topology", "discover", "gpu_nodes", "preset_names"]
