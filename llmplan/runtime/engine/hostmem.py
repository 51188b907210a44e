"""The engine process's C heap: keep freed memory instead of mapping it afresh every step.

A CPU forward pass allocates and frees the same large activations every step (at a 2,048-token
prefill chunk of llama-120m the fused gate/up output alone is 50 MB). glibc serves blocks over
its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns them with ``munmap``, so
every step page-faults its activations in again, and the page faults of two OpenMP threads
serialise on the process's memory map. ``keep_freed_memory`` turns that off for the process
(``mallopt``: no mmap-served blocks, no trimming of the heap top), as vLLM's CPU guide gets by
preloading TCMalloc. The cost: memory freed by the process is kept for reuse, not returned to
the OS (the resident size stays at its peak), and large zeroed allocations cost a memset. So
only ``llmplan serve`` turns it on, after its one build: a process that builds and drops
engines again and again (the test suite, sweeps) got slower with it (six llama-120m builds:
27.2 s and 1.8 GiB resident afterwards, against 12.5 s and 0.6 GiB without).

Measured on this project's 2-core Xeon (``llama-120m``, fp32, random weights, the prefill-heavy
workload of ``benchmarks/serve_vs_vllm.py`` in-process): 2 threads, its four 2,048-token
prefill steps 12.7 s -> 6.5 s; 1 thread 11.8 s -> 11.3 s.

Set ``LLMPLAN_KEEP_FREED_MEMORY=0`` to leave the allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Switch glibc's malloc to keep freed memory (see the module doc); once per process.
    True when it is on; False where it does not apply (not Linux/glibc, or opted out)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("LLMPLAN_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs: nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if ok:
        log.debug("malloc keeps freed memory for reuse (LLMPLAN_KEEP_FREED_MEMORY=0 turns this off)")
    _done = ok
    return ok
