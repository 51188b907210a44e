"""The global KV store in the simulator: the tier below every instance's GPU prefix cache.

It models what :mod:`llmplan.kvstore` does inside ``llmplan serve --kv-store`` with scheduled
hits (``StoreExecutor.prefix_probe``), without tensors:

* one store shared by every instance, addressed by the same chained block hashes as the GPU
  prefix cache (:func:`llmplan.runtime.core.blocks.chain_hashes` over the prompt's token ids);
* **write-back**: every full prompt block a prefill step computes is put into the store (blocks
  taken from the GPU cache or loaded from the store are not written again), as the store
  executor does;
* **lookup at admission**: the scheduler asks the GPU prefix cache first; only when it holds no
  block of the prompt does it ask the store (:class:`~llmplan.runtime.core.scheduler.PrefixProbe`),
  which answers the longest run of leading blocks it holds. Those tokens are promised: the step
  that admits the request computes only the rest and loads the promised blocks;
* **load cost**: the promised blocks' bytes (``kv_bytes_per_token`` per token) cross the
  host-to-GPU link at ``kv_store_gbps``; loading overlaps compute layer by layer (the engine's
  pipeline), so such a step takes ``max(compute, load)``;
* **capacity**: the memory tier's LRU over whole blocks (all layers of a block together): a put
  or a hit refreshes a block, the least recently used block is dropped when full. The engine's
  optional disk tier is not modelled (a block evicted from memory is gone).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmplan.errors import LlmplanError


class SimKVStore:
    """An LRU set of block hashes with a capacity in blocks."""

    __slots__ = ("capacity_blocks", "_lru", "put_blocks", "evictions", "lookups", "hit_blocks")

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise LlmplanError(
                f"the KV store holds {capacity_blocks} blocks; give it at least one block of memory"
            )
        self.capacity_blocks = int(capacity_blocks)
        self._lru: OrderedDict[bytes, None] = OrderedDict()
        self.put_blocks = 0  # blocks written (new or refreshed)
        self.evictions = 0
        self.lookups = 0
        self.hit_blocks = 0  # leading blocks found, summed over lookups (promised or not)

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, h: bytes) -> bool:
        return h in self._lru

    def match(self, hashes: Sequence[bytes]) -> int:
        """Leading blocks of ``hashes`` the store holds; refreshes them."""
        self.lookups += 1
        lru = self._lru
        n = 0
        for h in hashes:
            if h not in lru:
                break
            lru.move_to_end(h)
            n += 1
        self.hit_blocks += n
        return n

    def put(self, hashes: Sequence[bytes]) -> None:
        lru = self._lru
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                if len(lru) > self.capacity_blocks:
                    lru.popitem(last=False)
                    self.evictions += 1
            self.put_blocks += 1
