"""Prometheus export of the global KV store: ``registry.register(StoreCollector(store, stats))``.

Two views: the store's own per-(block, layer) traffic and tiers (``StoreStats``), and, when a
serving executor is attached, what it did for requests in blocks and prompt tokens
(``ServingStats``). Counters get Prometheus' ``_total`` suffix on exposition.
"""

from __future__ import annotations

from collections.abc import Iterator

from llmplan.kvstore.store import GlobalKVStore, StoreStats

_COUNTERS = {
    "puts": "(block, layer) entries written",
    "memory_hits": "(block, layer) loads served by the memory tier",
    "disk_hits": "(block, layer) loads served by the disk tier",
    "misses": "(block, layer) loads found in no tier",
    "corrupt_dropped": "disk files that failed their checksum or were truncated; dropped and recomputed",
    "memory_evictions": "memory-tier entries evicted (LRU)",
    "disk_evictions": "disk-tier files evicted for capacity",
    "bytes_loaded": "KV bytes loaded from the store",
    "bytes_stored": "KV bytes written to the store",
    "disk_write_errors": "disk writes that failed (block kept in memory only)",
}
_GAUGES = {"memory_bytes": "KV bytes held by the memory tier", "disk_bytes": "KV bytes held by the disk tier"}
_SERVING = {
    "lookups": ("lookups", "prefill chunks that looked up their cached blocks"),
    "hit_blocks": ("hit_blocks", "full prompt blocks loaded from the store instead of computed"),
    "miss_blocks": ("miss_blocks", "full prompt blocks not in the store (computed)"),
    "hit_tokens": ("hit_tokens", "prompt tokens served from the store (not computed)"),
    "miss_tokens": ("miss_tokens", "prompt tokens of those chunks that were computed"),
    "written_blocks": ("written_blocks", "full blocks written back after a prefill"),
    "promised_blocks": ("promised_blocks", "prefix blocks the scheduler skipped at admission (store hits)"),
    "promised_loaded_blocks": ("promised_loaded_blocks", "of those, loaded from the store"),
    "promised_recomputed_blocks": ("promised_recomputed_blocks",
                                   "of those, gone or corrupt at load time and computed instead"),
    "retries": ("step_retries", "step passes re-run because a cached block vanished or was corrupt"),
    "load_s": ("load_seconds", "loader thread busy time"),
    "load_stall_s": ("load_stall_seconds", "time compute waited for a layer's prefix KV"),
    "store_s": ("store_seconds", "writer thread busy time"),
    "store_tail_s": ("store_tail_seconds", "time steps waited for their last write-backs"),
}


class StoreCollector:
    def __init__(self, store: GlobalKVStore, serving=None, prefix: str = "llmplan_kvstore") -> None:
        self.store = store
        self.serving = serving  # a ServingStats (llmplan.kvstore.serving), or None
        self.prefix = prefix

    def collect(self) -> Iterator:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s: StoreStats = self.store.stats()
        p = self.prefix
        for name, doc in _COUNTERS.items():
            yield CounterMetricFamily(f"{p}_{name}", f"KV store: {doc}", value=float(getattr(s, name)))
        for name, doc in _GAUGES.items():
            yield GaugeMetricFamily(f"{p}_{name}", f"KV store: {doc}", value=float(getattr(s, name)))
        if self.serving is not None:
            for attr, (name, doc) in _SERVING.items():
                yield CounterMetricFamily(f"{p}_{name}", f"KV store: {doc}",
                                          value=float(getattr(self.serving, attr)))
