"""Utilisation and memory samplers: NVML on NVIDIA GPUs, psutil on CPU.

``nvml``: device-wide GPU utilisation (%) and used memory (MiB) of one GPU: everything on that GPU
counts, so profile on an otherwise idle device. ``psutil`` with a ``pid``: that process (and its
children) -- CPU utilisation normalised to 0-100% of all cores, resident memory (MiB). ``psutil``
without a pid: system-wide CPU % and used memory. Samples are taken every ``interval_s`` on a
background thread while a request runs.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from llmplan.errors import LlmplanError


@dataclass(slots=True)
class Window:
    max_util: float
    mean_util: float
    max_mem_mb: float
    mean_mem_mb: float
    n_samples: int


class _NvmlProbe:
    name = "nvml"

    def __init__(self, device: int = 0) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nv = pynvml
        self._h = pynvml.nvmlDeviceGetHandleByIndex(device)

    def read(self) -> tuple[float, float]:
        util = self._nv.nvmlDeviceGetUtilizationRates(self._h).gpu
        mem = self._nv.nvmlDeviceGetMemoryInfo(self._h).used / 2**20
        return float(util), float(mem)


class _PsutilProbe:
    def __init__(self, pid: int | None = None) -> None:
        import psutil

        self._ps = psutil
        self._ncpu = psutil.cpu_count() or 1
        if pid is None:
            self.name = "psutil-system"
            self._proc = None
            psutil.cpu_percent(None)  # prime: the first call always returns 0.0
            return
        try:
            self._proc = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise LlmplanError(
                f"no process with pid {pid}; pass the server's pid to --pid or omit it"
            ) from None
        self.name = f"psutil-pid{pid}"
        self._procs: dict[int, object] = {}
        self._cpu_all()

    def _cpu_all(self) -> float:
        procs = [self._proc, *self._proc.children(recursive=True)]
        total = 0.0
        for p in procs:
            q = self._procs.setdefault(p.pid, p)
            try:
                total += q.cpu_percent(None)
            except self._ps.NoSuchProcess:
                self._procs.pop(p.pid, None)
        return total / self._ncpu

    def read(self) -> tuple[float, float]:
        if self._proc is None:
            return float(self._ps.cpu_percent(None)), float(self._ps.virtual_memory().used / 2**20)
        rss = self._proc.memory_info().rss
        for c in self._proc.children(recursive=True):
            try:
                rss += c.memory_info().rss
            except self._ps.NoSuchProcess:
                pass
        return self._cpu_all(), rss / 2**20


def make_probe(kind: str = "auto", pid: int | None = None, device: int = 0):
    """``auto``: NVML when a GPU answers, else psutil."""
    if kind in ("auto", "nvml"):
        try:
            return _NvmlProbe(device)
        except Exception as exc:  # pynvml raises its own NVMLError family (no driver, no device)
            if kind == "nvml":
                raise LlmplanError(
                    f"NVML is unavailable ({exc}); use --sampler psutil on CPU machines"
                ) from None
    if kind in ("auto", "psutil"):
        return _PsutilProbe(pid)
    raise LlmplanError(f"unknown sampler {kind!r}; choose auto, nvml or psutil")


class Sampler:
    def __init__(self, probe, interval_s: float = 0.05) -> None:
        self.probe = probe
        self.interval_s = interval_s
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self.probe.read())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        self._samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="llmplan-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._samples.append(self.probe.read())  # at least one sample even for very short requests

    def window(self) -> Window:
        arr = np.asarray(self._samples, dtype=float)
        return Window(
            float(arr[:, 0].max()),
            float(arr[:, 0].mean()),
            float(arr[:, 1].max()),
            float(arr[:, 1].mean()),
            len(arr),
        )
