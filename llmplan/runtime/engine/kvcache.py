"""The paged KV cache: one pre-allocated block pool per layer, addressed by block id.

Block *allocation* (which request owns which block, freeing, preemption) belongs to the
serving core's BlockManager; this module only holds the tensors. Every layer uses the same
block ids, so a request's block table is valid in every layer, wherever the layer lives
(each layer's pool sits on that layer's device, which is what a pipeline stage or a layer
migration moves).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from llmplan.runtime.engine.config import ModelConfig


def bytes_per_block(
    cfg: ModelConfig, block_size: int, dtype: torch.dtype, num_layers: int | None = None
) -> int:
    layers = cfg.num_layers if num_layers is None else num_layers
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * layers * block_size * cfg.num_kv_heads * cfg.head_dim * itemsize


class PagedKVCache:
    """K and V pools of shape ``[num_blocks, block_size, kv_heads, head_dim]`` per layer."""

    def __init__(
        self,
        cfg: ModelConfig,
        num_blocks: int,
        block_size: int,
        layer_devices: Sequence[torch.device],
        dtype: torch.dtype,
    ) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        shape = (num_blocks, block_size, cfg.num_kv_heads, cfg.head_dim)
        # Layers outside this worker's range get no pool (None): a stage holds only its own.
        self.k: list[torch.Tensor | None] = []
        self.v: list[torch.Tensor | None] = []
        for dev in layer_devices:
            if dev is None:
                self.k.append(None)
                self.v.append(None)
            else:
                self.k.append(torch.zeros(shape, dtype=dtype, device=dev))
                self.v.append(torch.zeros(shape, dtype=dtype, device=dev))

    def layer(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.k[idx], self.v[idx]
        assert k is not None and v is not None, f"layer {idx} has no KV pool on this worker"
        return k, v

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v) if t is not None)
