"""The global KV cache store shared by every prefill instance.

Two tiers behind one thread-safe API, addressed by ``(chained block hash, layer)``:

* CPU memory, LRU with a byte capacity -- the hot set;
* disk (optional), checksummed files that survive a restart -- the long tail.

``put`` writes through both tiers (the memory copy serves the next hit at once; the disk
copy survives eviction and restarts). ``get`` tries memory, then disk, and promotes a disk hit
into memory. A corrupt disk file is dropped and counted, and ``get`` returns ``None``: the
caller recomputes, exactly as for any other miss.

Per-layer granularity is what lets a prefill overlap loading layer ``i+1`` and writing back
layer ``i-1`` with computing layer ``i`` (see :mod:`llmplan.kvstore.pipeline`).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.disk import DiskTier
from llmplan.kvstore.memory import Key, MemoryTier, nbytes

log = logging.getLogger(__name__)


@dataclass(slots=True)
class StoreStats:
    puts: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    corrupt_dropped: int = 0
    memory_evictions: int = 0
    disk_evictions: int = 0
    memory_bytes: int = 0
    disk_bytes: int = 0
    bytes_loaded: int = 0
    bytes_stored: int = 0
    disk_write_errors: int = 0


class GlobalKVStore:
    def __init__(
        self,
        num_layers: int,
        memory_bytes: int = 1 << 30,
        disk_dir: str | os.PathLike | None = None,
        disk_bytes: int | None = None,
    ) -> None:
        if num_layers <= 0:
            raise LlmplanError(f"num_layers must be positive, got {num_layers}")
        if memory_bytes < 0:
            raise LlmplanError(f"memory capacity must be >= 0 bytes, got {memory_bytes}")
        self.num_layers = num_layers
        self.memory = MemoryTier(memory_bytes)
        self.disk = DiskTier(disk_dir, disk_bytes) if disk_dir is not None else None
        self._lock = threading.Lock()
        self._s = StoreStats()

    # -- per block and layer
    def put(self, block: bytes, layer: int, kv: torch.Tensor) -> None:
        self._check_layer(layer)
        kv = kv.detach()
        if kv.device.type != "cpu":
            kv = kv.to("cpu")
        self.memory.put((block, layer), kv)
        if self.disk is not None:
            try:
                self.disk.put((block, layer), kv)
            except OSError as e:
                # A full or failing disk must not fail the prefill that is writing back: the
                # block stays in memory (or is recomputed later); the error is counted and logged.
                log.warning("KV store: cannot write block to %s (%s); keeping it in memory only",
                            self.disk.root, e)
                with self._lock:
                    self._s.disk_write_errors += 1
        with self._lock:
            self._s.puts += 1
            self._s.bytes_stored += nbytes(kv)

    def get(self, block: bytes, layer: int) -> torch.Tensor | None:
        self._check_layer(layer)
        key: Key = (block, layer)
        t = self.memory.get(key)
        if t is not None:
            with self._lock:
                self._s.memory_hits += 1
                self._s.bytes_loaded += nbytes(t)
            return t
        t = self.disk.get(key) if self.disk is not None else None
        with self._lock:
            if t is None:
                self._s.misses += 1
            else:
                self._s.disk_hits += 1
                self._s.bytes_loaded += nbytes(t)
        if t is not None:
            self.memory.put(key, t)
        return t

    def contains(self, block: bytes, layer: int) -> bool:
        key = (block, layer)
        return key in self.memory or (self.disk is not None and key in self.disk)

    def has_block(self, block: bytes) -> bool:
        """Whether every layer of ``block`` is stored (in either tier)."""
        return all(self.contains(block, layer) for layer in range(self.num_layers))

    # -- per prefix
    def match_prefix(self, blocks: Sequence[bytes]) -> int:
        """Number of leading blocks present for *every* layer (the reusable prefix)."""
        n = 0
        for b in blocks:
            if not self.has_block(b):
                break
            n += 1
        return n

    def load_layer(self, blocks: Sequence[bytes], layer: int) -> list[torch.Tensor] | None:
        """All ``blocks`` of one layer, or ``None`` if any is missing or corrupt."""
        out = []
        for b in blocks:
            t = self.get(b, layer)
            if t is None:
                return None
            out.append(t)
        return out

    def stats(self) -> StoreStats:
        with self._lock:
            s = StoreStats(**{f: getattr(self._s, f) for f in StoreStats.__slots__})
        s.memory_evictions = self.memory.evictions
        s.memory_bytes = self.memory.used_bytes
        if self.disk is not None:
            s.corrupt_dropped = self.disk.corrupt_dropped
            s.disk_evictions = self.disk.evictions
            s.disk_bytes = self.disk.used_bytes
        return s

    def expect_blocks(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """Every block of this store's model is ``shape``/``dtype``: a disk file that decodes to
        anything else is dropped as corrupt (and counted) rather than loaded."""
        if self.disk is not None:
            self.disk.expect = (tuple(shape), dtype)

    def _check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.num_layers:
            raise LlmplanError(f"layer {layer} is outside the store's 0..{self.num_layers - 1}")
