"""Reading energy: NVML on NVIDIA GPUs, RAPL on the CPU, else "modelled only".

* NVML (``nvidia-ml-py``): ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta+),
  ``nvmlDeviceGetPowerUsage`` (mW), SM clock and utilisation. ``set_locked_clocks`` locks the SM
  clock (``nvmlDeviceSetGpuLockedClocks``); that needs root or an admin-granted permission, and
  the answer says plainly when it was refused. This path is written against the NVML API but
  has **not been run on a GPU** in this project's tests (no GPU here): tests use recorded samples.
* RAPL (``/sys/class/powercap/intel-rapl:*/energy_uj``, microjoules, wraps at
  ``max_energy_range_uj``): package energy of the CPU when the kernel exposes it and it is readable.
* Neither: :class:`EnergyMeter` says that energy is modelled only.

Recorded samples (one JSON object per line: ``mhz``, ``activity`` 0..1, ``power_w``; other keys
ignored) feed :func:`llmplan.energy.power.fit_power` through :func:`load_power_samples`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmplan.energy.power import PowerSample
from llmplan.errors import LlmplanError

POWERCAP = Path("/sys/class/powercap")


@dataclass(frozen=True, slots=True)
class RaplZone:
    name: str
    path: Path
    max_uj: int


class RaplReader:
    """Top-level RAPL zones (CPU packages, plus ``psys``/``dram`` when exposed) under ``root``."""

    def __init__(self, root: Path | str = POWERCAP) -> None:
        self.root = Path(root)
        self.zones: list[RaplZone] = []
        self.problem = ""
        if not self.root.is_dir():
            self.problem = f"{self.root} does not exist (no RAPL on this machine)"
            return
        for d in sorted(self.root.glob("intel-rapl:*")):
            if d.name.count(":") != 1:  # sub-zones (core, uncore) are inside their package
                continue
            f = d / "energy_uj"
            try:
                f.read_text()
            except OSError as e:
                self.problem = f"{f} is not readable ({e.strerror}); run as root or chmod it"
                continue
            name = (d / "name").read_text().strip() if (d / "name").is_file() else d.name
            mx = d / "max_energy_range_uj"
            self.zones.append(RaplZone(f"{d.name}:{name}", f, int(mx.read_text()) if mx.is_file() else 2**63))
        if not self.zones and not self.problem:
            self.problem = f"no intel-rapl zones under {self.root}"

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def read_uj(self) -> dict[str, int]:
        return {z.name: int(z.path.read_text()) for z in self.zones}

    def joules_between(self, a: dict[str, int], b: dict[str, int]) -> dict[str, float]:
        """Joules per zone from reading ``a`` to ``b``, across one counter wrap."""
        out = {}
        for z in self.zones:
            d = b[z.name] - a[z.name]
            if d < 0:
                d += z.max_uj
            out[z.name] = d / 1e6
        return out


@dataclass(frozen=True, slots=True)
class GpuReading:
    index: int
    energy_mj: int | None  # since driver load; None where the GPU lacks the counter
    power_w: float
    sm_mhz: float
    util: float  # 0..1


class NvmlReader:
    """NVIDIA GPUs through NVML. ``available`` is False (with ``problem``) without a driver or GPU."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.problem = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nv = pynvml
            self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if not self.handles:
                self.problem = "NVML found no GPU"
        except Exception as e:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.problem = f"NVML unavailable ({type(e).__name__}: {e})"

    @property
    def available(self) -> bool:
        return bool(self.handles)

    def read(self) -> list[GpuReading]:
        nv = self._nv
        out = []
        for i, h in enumerate(self.handles):
            try:
                e: int | None = int(nv.nvmlDeviceGetTotalEnergyConsumption(h))
            except nv.NVMLError:
                e = None
            out.append(GpuReading(
                i, e, nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
            ))
        return out

    def set_locked_clocks(self, mhz: float | None, index: int = 0) -> tuple[bool, str]:
        """Lock GPU ``index``'s SM clock to ``mhz`` (None: reset). Returns (done, what happened);
        never raises for a refusal: the caller carries on at the driver's clocks and says so."""
        if not self.available:
            return False, f"cannot lock clocks: {self.problem}"
        nv = self._nv
        h = self.handles[index]
        try:
            if mhz is None:
                nv.nvmlDeviceResetGpuLockedClocks(h)
                return True, f"GPU{index}: SM clock unlocked"
            nv.nvmlDeviceSetGpuLockedClocks(h, int(mhz), int(mhz))
            return True, f"GPU{index}: SM clock locked at {int(mhz)} MHz"
        except nv.NVMLError as e:
            return False, (
                f"GPU{index}: locking the SM clock was refused ({e}); it needs root or "
                "`nvidia-smi -acp UNRESTRICTED`; running at the driver's clocks, "
                "energy control is modelled only"
            )


@dataclass(slots=True)
class EnergyMeter:
    """Joules over an interval from the best source present: NVML (GPUs), else RAPL (CPU
    packages), else none (``source == "modelled"``: energy is the model's, not a measurement)."""

    rapl_root: Path | str = POWERCAP
    use_nvml: bool = True
    source: str = field(init=False, default="modelled")
    note: str = field(init=False, default="")
    _nvml: NvmlReader | None = field(init=False, default=None)
    _rapl: RaplReader | None = field(init=False, default=None)
    _start: Any = field(init=False, default=None)
    _t0: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        notes = []
        if self.use_nvml:
            nv = NvmlReader()
            if nv.available and all(r.energy_mj is not None for r in nv.read()):
                self._nvml, self.source = nv, "nvml"
                return
            notes.append(nv.problem or "GPU has no energy counter")
        rp = RaplReader(self.rapl_root)
        if rp.available:
            self._rapl, self.source = rp, "rapl"
            self.note = "CPU package energy (RAPL); no GPU energy counter"
            return
        notes.append(rp.problem)
        self.note = "energy is modelled only: " + "; ".join(n for n in notes if n)

    def _read(self) -> Any:
        if self._nvml is not None:
            return {f"gpu{r.index}": r.energy_mj / 1000.0 for r in self._nvml.read()}  # type: ignore[operator]
        if self._rapl is not None:
            return self._rapl.read_uj()
        return None

    def start(self) -> None:
        self._start = self._read()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        """``{"source", "seconds", "joules", "by_device", "note"}``; joules None when modelled."""
        end = self._read()
        dt = time.monotonic() - self._t0
        by: dict[str, float] | None = None
        if self._nvml is not None:
            by = {k: end[k] - self._start[k] for k in end}
        elif self._rapl is not None:
            by = self._rapl.joules_between(self._start, end)
        return {
            "source": self.source, "seconds": dt,
            "joules": None if by is None else sum(by.values()), "by_device": by, "note": self.note,
        }


def load_power_samples(path: Path | str) -> list[PowerSample]:
    """Recorded power samples (JSON lines with ``mhz``, ``activity``, ``power_w``)."""
    p = Path(path)
    out = []
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise LlmplanError(f"cannot read power samples {p}: {e.strerror}; give a JSON-lines file") from None
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.append(PowerSample(float(d["mhz"]), float(d["activity"]), float(d["power_w"])))
        except (ValueError, KeyError, TypeError) as e:
            raise LlmplanError(
                f"{p}:{k}: not a power sample ({type(e).__name__}: {e}); "
                "each line needs mhz, activity, power_w"
            ) from None
    return out
