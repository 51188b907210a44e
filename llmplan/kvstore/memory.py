"""CPU-memory tier: an LRU of per-(block, layer) KV tensors with a capacity in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch

Key = tuple[bytes, int]  # (chained block hash, layer index)


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class MemoryTier:
    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = int(capacity_bytes)
        self.used_bytes = 0
        self.evictions = 0
        self._d: OrderedDict[Key, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._d

    def get(self, key: Key) -> torch.Tensor | None:
        with self._lock:
            t = self._d.get(key)
            if t is not None:
                self._d.move_to_end(key)
            return t

    def put(self, key: Key, value: torch.Tensor) -> list[Key]:
        """Insert (or refresh) ``key``; returns the keys evicted to make room.

        A value larger than the whole tier is not cached (it would only flush everything).
        """
        size = nbytes(value)
        evicted: list[Key] = []
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.used_bytes -= nbytes(old)
            if size > self.capacity_bytes:
                return evicted
            while self.used_bytes + size > self.capacity_bytes and self._d:
                k, v = self._d.popitem(last=False)
                self.used_bytes -= nbytes(v)
                self.evictions += 1
                evicted.append(k)
            self._d[key] = value
            self.used_bytes += size
        return evicted

    def discard(self, key: Key) -> None:
        with self._lock:
            v = self._d.pop(key, None)
            if v is not None:
                self.used_bytes -= nbytes(v)
