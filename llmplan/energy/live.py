"""EcoFreq on a serving engine: lock the GPU's SM clock before each iteration through NVML.

``LiveClockControl`` is what :class:`~llmplan.runtime.engine.llm_engine.LLMEngine` calls when its
``clock_control`` is set: ``before_step(batch, waiting, now)`` picks a clock with the same
:class:`~llmplan.energy.green.EcoFreq` the simulator uses and applies it (only when it changes);
``after_step(batch, seconds)`` feeds the measured step time to EcoPred. Locking clocks needs root
or ``nvidia-smi -acp UNRESTRICTED``: the first refusal turns the control off, and ``status`` (also
logged once) says so -- the engine then runs at the driver's clocks.

**Not run on a GPU in this project** (no GPU was available): the decision path is tested on CPU
with a recording clock setter; the NVML calls are those of :class:`~llmplan.energy.measure.NvmlReader`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmplan.energy.green import EcoFreq, EcoPred, _shape_of
from llmplan.energy.power import ClockedCost

log = logging.getLogger(__name__)


class ClockSetter(Protocol):
    def set_locked_clocks(self, mhz: float | None, index: int = 0) -> tuple[bool, str]: ...


@dataclass(slots=True)
class LiveClockControl:
    cost: ClockedCost  # the served model on this GPU kind (llmplan.energy.power.ClockedCost.wrap)
    setter: ClockSetter
    gpu_indices: tuple[int, ...] = (0,)
    margin: float = 0.85
    enabled: bool = True
    status: str = "clock control on"
    mhz: float = 0.0
    changes: int = 0
    freq: EcoFreq = field(init=False)

    def __post_init__(self) -> None:
        self.freq = EcoFreq(self.cost.power, EcoPred.profiled(self.cost), margin=self.margin)
        self.mhz = self.cost.power.f_max_mhz

    def before_step(self, batch: Any, waiting: Any, now: float) -> None:
        if not self.enabled:
            return
        shape = _shape_of(batch)
        f = self.freq.choose(self.cost, shape, self.freq.budget_s(batch, waiting, now))
        if f == self.mhz:
            return
        for i in self.gpu_indices:
            ok, msg = self.setter.set_locked_clocks(f, i)
            if not ok:
                self.enabled = False
                self.status = msg
                log.warning("%s", msg)
                return
        self.mhz = f
        self.changes += 1

    def after_step(self, batch: Any, seconds: float) -> None:
        if self.enabled and seconds > 0:
            self.freq.pred.update(_shape_of(batch), self.mhz, seconds)

    def close(self) -> None:
        """Give the clocks back to the driver."""
        if self.enabled and self.changes:
            for i in self.gpu_indices:
                self.setter.set_locked_clocks(None, i)


def check_clock_control(mode: str | None, device: str, workers: int, deployment: bool) -> None:
    """Refuse ``serve --clock-control`` where it cannot work, before anything loads."""
    from llmplan.errors import LlmplanError

    if mode is None:
        return
    if mode != "greenserve":
        raise LlmplanError(f"--clock-control {mode!r}: the only controller is greenserve")
    if not device.startswith("cuda"):
        raise LlmplanError(
            f"--clock-control greenserve locks NVIDIA GPU clocks and needs --device cuda (got {device}); "
            "on a CPU energy is modelled only: llmplan bench --energy greenserve"
        )
    if workers > 1 or deployment:
        raise LlmplanError(
            "--clock-control drives one built-in engine on one GPU; drop --workers/--instances/--pd"
        )


def attach_clock_control(engine: Any, model: str, device: str) -> LiveClockControl:
    """Build EcoFreq for ``model`` on the GPU behind ``device`` (cuda or cuda:N) and hook it into the
    built-in engine. Untested on a GPU in this project."""
    from llmplan.energy.measure import NvmlReader
    from llmplan.errors import LlmplanError
    from llmplan.models import get_model_spec
    from llmplan.plan.costmodel import GIB, GpuPerf, InstanceCost
    from llmplan.topology.specs import spec_for

    nv = NvmlReader()
    if not nv.available:
        raise LlmplanError(f"--clock-control needs NVML: {nv.problem}")
    idx = int(device.split(":")[1]) if ":" in device else 0
    name = nv._nv.nvmlDeviceGetName(nv.handles[idx])
    g = spec_for(name.decode() if isinstance(name, bytes) else str(name))
    perf = GpuPerf(g.model, g.bf16_tflops * 1e12, g.hbm_gbps * 1e9, g.memory_gib * GIB)
    cost = ClockedCost.wrap(InstanceCost.single(get_model_spec(model), perf))
    ctl = LiveClockControl(cost, nv, gpu_indices=(idx,))
    engine.engine.clock_control = ctl
    return ctl
