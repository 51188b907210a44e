"""Layer-wise pipelined prefill over the global store.

While layer ``i`` computes on the uncached suffix, a loader thread fetches layer ``i+1``'s
cached-prefix KV from the store and a writer thread stores layer ``i-1``'s new suffix blocks:

    loader :  load L0 | load L1   | load L2   | ...
    compute:          | layer 0   | layer 1   | layer 2 ...
    writer :                      | store L0  | store L1 ...

so with loads no slower than a layer's compute, the prefix costs (almost) nothing beyond the
first layer's load. Threads suffice on CPU because torch kernels, file reads and hashlib all
release the GIL; on a GPU, loads are staged through pinned memory and copied on a side CUDA
stream whose event the compute stream waits on.

The model is reached through one callable, ``compute(i, hidden, past_kv) -> (hidden, new_kv)``,
with KV laid out ``[2, tokens, kv_heads, head_dim]`` per layer, so any layer stack (the engine's
model, a test stack) plugs in. A block that turns out missing or corrupt mid-way aborts the
run (``None``): the caller recomputes the prompt from scratch, never uses partial KV.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import torch

from llmplan.errors import LlmplanError
from llmplan.kvstore.store import GlobalKVStore

Compute = Callable[[int, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
Place = Callable[[int, list[torch.Tensor]], None]
PLACED = object()  # a load that went straight to the caller's destination


@dataclass(slots=True)
class PrefillTiming:
    wall_s: float = 0.0
    compute_s: float = 0.0  # time inside compute() on the caller's thread
    load_s: float = 0.0  # loader thread busy time
    load_stall_s: float = 0.0  # compute waited on a load
    store_s: float = 0.0  # writer thread busy time
    store_tail_s: float = 0.0  # waited for the last write-backs after the last layer
    first_load_s: float = 0.0  # layer 0's load: nothing runs before it, so it can never be hidden
    first_stall_s: float = 0.0

    @property
    def load_overlap(self) -> float:
        """Share of the loading hidden behind compute (1 = fully hidden), first layer included."""
        return 1.0 if self.load_s <= 0 else max(0.0, 1.0 - self.load_stall_s / self.load_s)

    @property
    def steady_load_overlap(self) -> float:
        """Share of layers 1.. loading hidden behind compute: what prefetching controls."""
        busy = self.load_s - self.first_load_s
        stall = self.load_stall_s - self.first_stall_s
        return 1.0 if busy <= 0 else min(1.0, max(0.0, 1.0 - stall / busy))

    @property
    def store_overlap(self) -> float:
        return 1.0 if self.store_s <= 0 else max(0.0, 1.0 - self.store_tail_s / self.store_s)


@dataclass(slots=True)
class PrefillResult:
    hidden: torch.Tensor
    past_kv: list[torch.Tensor]  # per layer: [2, prefix + suffix tokens, kv_heads, head_dim]
    timing: PrefillTiming


class LayerwisePrefill:
    def __init__(self, store: GlobalKVStore, device: torch.device | str = "cpu", prefetch_depth: int = 1,
                 write_back: bool = True) -> None:
        if prefetch_depth < 1:
            raise LlmplanError(f"prefetch_depth must be >= 1, got {prefetch_depth}")
        self.store = store
        self.device = torch.device(device)
        self.prefetch_depth = prefetch_depth
        self.write_back = write_back
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="kv-load")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="kv-store")
        self._cuda = self.device.type == "cuda"
        self._stream = torch.cuda.Stream(self.device) if self._cuda else None

    def close(self) -> None:
        self._loader.shutdown(wait=True)
        self._writer.shutdown(wait=True)

    def __enter__(self) -> LayerwisePrefill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- background work
    def _load(self, blocks: Sequence[bytes], layer: int, place: Place | None = None
              ) -> tuple[torch.Tensor | object | None, float, object]:
        t0 = time.perf_counter()
        parts = self.store.load_layer(blocks, layer)
        event = None
        if parts is None:
            return None, time.perf_counter() - t0, None
        if place is not None:
            # The caller's own destination (the engine's paged pool): written here, on the loader
            # thread (and side stream), while the previous layer computes.
            if self._cuda:
                with torch.cuda.stream(self._stream):
                    place(layer, [p.pin_memory() for p in parts])
                    event = torch.cuda.Event()
                    event.record(self._stream)
            else:
                place(layer, parts)
            return PLACED, time.perf_counter() - t0, event
        kv = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        if self._cuda:
            with torch.cuda.stream(self._stream):
                kv = kv.pin_memory().to(self.device, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self._stream)
        elif kv.device != self.device:
            kv = kv.to(self.device)
        return kv, time.perf_counter() - t0, event

    def _store(self, blocks: Sequence[bytes], layer: int, new_kv: torch.Tensor, block_size: int) -> float:
        t0 = time.perf_counter()
        cpu = new_kv.to("cpu") if new_kv.device.type != "cpu" else new_kv
        for j, b in enumerate(blocks):
            self.store.put(b, layer, cpu[:, j * block_size:(j + 1) * block_size].clone())
        return time.perf_counter() - t0

    # -- the pipelined prefill
    def run(
        self,
        compute: Compute,
        hidden: torch.Tensor,
        num_layers: int,
        cached_blocks: Sequence[bytes],
        new_blocks: Sequence[bytes],
        block_size: int,
        keep_kv: bool = True,
        place: Place | None = None,
    ) -> PrefillResult | None:
        """Prefill the suffix over ``num_layers`` layers; ``None`` if a cached block vanished.

        ``keep_kv=False`` skips assembling ``past_kv`` (prefix + suffix per layer) for callers
        whose KV already lives elsewhere (the engine's paged pool): one copy less per layer.
        ``place(layer, parts)``, if given, receives each layer's loaded blocks on the loader
        thread (it must write only that layer's state); ``compute`` then gets ``past=None``.
        """
        if place is not None and keep_kv:
            raise LlmplanError("keep_kv needs the loaded KV back; pass keep_kv=False with place")
        tm = PrefillTiming()
        t_start = time.perf_counter()
        loads: dict[int, Future] = {}
        writes: list[Future] = []
        past_all: list[torch.Tensor] = []

        submitted = 0

        def prefetch(upto: int) -> None:
            nonlocal submitted
            while submitted < min(upto, num_layers):
                loads[submitted] = self._loader.submit(self._load, cached_blocks, submitted, place)
                submitted += 1

        try:
            if cached_blocks:
                prefetch(self.prefetch_depth)
            for i in range(num_layers):
                past = None
                if cached_blocks:
                    prefetch(i + 1 + self.prefetch_depth)  # keep layer i+1 (..) in flight while i computes
                    t0 = time.perf_counter()
                    past, busy, event = loads.pop(i).result()
                    stall = time.perf_counter() - t0
                    tm.load_stall_s += stall
                    tm.load_s += busy
                    if i == 0:
                        tm.first_load_s, tm.first_stall_s = busy, stall
                    if past is None:
                        return None
                    if event is not None:
                        torch.cuda.current_stream(self.device).wait_event(event)
                    if past is PLACED:
                        past = None
                t0 = time.perf_counter()
                hidden, new_kv = compute(i, hidden, past)
                if self._cuda:
                    torch.cuda.current_stream(self.device).synchronize()
                tm.compute_s += time.perf_counter() - t0
                if keep_kv:
                    past_all.append(new_kv if past is None else torch.cat([past, new_kv], dim=1))
                if self.write_back and new_blocks:
                    writes.append(self._writer.submit(self._store, new_blocks, i, new_kv, block_size))
            t0 = time.perf_counter()
            tm.store_s = sum(f.result() for f in writes)
            tm.store_tail_s = time.perf_counter() - t0
        finally:
            for f in loads.values():
                f.cancel()
        tm.wall_s = time.perf_counter() - t_start
        return PrefillResult(hidden, past_all, tm)
