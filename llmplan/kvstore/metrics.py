"""Prometheus export of the global KV store: ``REGISTRY.register(StoreCollector(store))``."""

from __future__ import annotations

from collections.abc import Iterator

from llmplan.kvstore.store import GlobalKVStore, StoreStats

_COUNTERS = ("puts", "memory_hits", "disk_hits", "misses", "corrupt_dropped", "memory_evictions",
             "disk_evictions", "bytes_loaded", "bytes_stored", "disk_write_errors")
_GAUGES = ("memory_bytes", "disk_bytes")


class StoreCollector:
    def __init__(self, store: GlobalKVStore, prefix: str = "llmplan_kvstore") -> None:
        self.store = store
        self.prefix = prefix

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s: StoreStats = self.store.stats()
        for name in _COUNTERS:
            yield CounterMetricFamily(f"{self.prefix}_{name}", f"KV store {name.replace('_', ' ')}",
                                      value=float(getattr(s, name)))
        for name in _GAUGES:
            yield GaugeMetricFamily(f"{self.prefix}_{name}", f"KV store {name.replace('_', ' ')} in use",
                                    value=float(getattr(s, name)))
