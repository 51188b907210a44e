"""What the operator cost model reads from a GPU.

:class:`llmplan.plan.costmodel.GpuPerf` implements it; the protocol is declared here so that
``opcost`` (below ``plan`` in docs/architecture.md) need not import the planner's cost model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmplan.models.spec import ModelSpec


class GpuPeaks(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def flops(self) -> float:
        """Dense BF16 FLOP/s after power-cap scaling."""
        ...

    @property
    def mem_bw(self) -> float:
        """Memory bandwidth, bytes/s."""
        ...

    def matmul_flops(self, spec: ModelSpec) -> float:
        """Peak for the decoder's weight matmuls at the spec's weight precision."""
        ...
