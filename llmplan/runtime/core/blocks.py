"""Paged KV block allocation: which sequence owns which fixed-size block of the KV pool.

The manager hands out block *ids*; the engine's ``PagedKVCache`` owns the tensors those ids
index and the simulator owns nothing at all. A sequence's block table is ``seq.block_ids``.
Preemption (recompute) is the scheduler's job: it calls :meth:`BlockManager.free` on the victim.
"""

from __future__ import annotations

from llmplan.runtime.core.types import SeqState


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` KV slots."""
    return -(-tokens // block_size) if tokens > 0 else 0


class BlockManager:
    """A free list of block ids. All operations are O(blocks moved)."""

    def __init__(self, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        # Popped from the end: recently freed blocks are reused first (warm in cache on a GPU).
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def capacity_of(self, seq: SeqState) -> int:
        """KV slots the sequence's blocks hold."""
        return len(seq.block_ids) * self.block_size

    def extra_blocks(self, seq: SeqState, tokens: int) -> int:
        """Blocks to add so that ``seq`` can hold ``tokens`` KV slots."""
        return max(0, blocks_for(tokens, self.block_size) - len(seq.block_ids))

    def can_allocate(self, n_blocks: int, watermark: int = 0) -> bool:
        return len(self._free) - n_blocks >= watermark

    def ensure(self, seq: SeqState, tokens: int) -> bool:
        """Grow ``seq``'s block table to hold ``tokens`` slots. False (and no change) if the
        pool cannot supply the blocks."""
        need = self.extra_blocks(seq, tokens)
        if need == 0:
            return True
        free = self._free
        if need > len(free):
            return False
        seq.block_ids.extend(free[-need:][::-1])
        del free[-need:]
        return True

    def free(self, seq: SeqState) -> int:
        """Return all of ``seq``'s blocks to the pool; returns how many."""
        n = len(seq.block_ids)
        if n:
            self._free.extend(reversed(seq.block_ids))
            seq.block_ids = []
        return n
